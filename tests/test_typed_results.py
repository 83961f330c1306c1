"""Typed results of the analysis room (issue 14): the features, similarity, rankings, confounds and
vowel-map results are frozen dataclasses whose ``to_dict()`` is exactly what the files on disk
hold, and the attributes their callers read exist."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis.confounds import DurationSummary, PositionShare, position_share
from analysis.extract import extract_features, merge_shard_reports
from analysis.extract_report import FeaturesReport, MergedFeaturesReport, ShardSummary, UtteranceFailure
from analysis.rankings import Rankings, Selections, load_selections, read_rankings
from analysis.similarity import SimilarityConfig, SimilarityReport, compare_stores, run_similarity
from analysis.store import FeatureStore
from analysis.testing import random_model
from analysis.vowel_map import VowelMapFiles

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny real chain: 8 aligned demo utterances per language (one of them made unreadable),
    every layer of a random 2-layer HuBERT per language and in 2 shards, and `lam similarity`
    with the vowel map."""
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import demo_corpus_dir, read_corpus

    root = tmp_path_factory.mktemp("typed")
    utts = read_corpus(None, preset="lam-demo")
    chosen = [u for u in utts if u.language == "en"][:8] + [u for u in utts if u.language == "zh"][:8]
    align_corpus(chosen, root / "aligned", get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"),
                 progress=False)
    random_model("hubert", n_layers=2).save_pretrained(root / "hubert")
    bad = [u for u in chosen if u.language == "en"][-1]
    (root / "bad.wav").write_bytes(b"RIFF not audio")
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(root / "aligned" / "utterances.parquet")
    paths = [str(root / "bad.wav") if u == bad.utt_id else p
             for u, p in zip(table.column("utt_id").to_pylist(), table.column("audio_path").to_pylist(), strict=True)]
    pq.write_table(table.set_column(table.schema.get_field_index("audio_path"), "audio_path", pa.array(paths)),
                   root / "aligned" / "utterances.parquet")
    kw = dict(model=str(root / "hubert"), device="cpu", progress=False)
    reports = {lang: extract_features(root / "aligned", root / f"st_{lang}", language=lang, **kw)
               for lang in ("en", "zh")}
    shards = [extract_features(root / "aligned", root / "st_shard", shard=(i, 2), **kw) for i in range(2)]
    sim = run_similarity(root / "st_en", root / "st_zh", root / "sim", metrics=("centroid_cosine", "coral"), k=1,
                         n_bootstrap=10, vowel_map=True, progress=False)
    return {"root": root, "reports": reports, "shards": shards, "sim": sim, "bad": bad.utt_id}


def _json(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _fields_and_properties(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)} | {n for n, v in vars(cls).items() if isinstance(v, property)}


def test_a_features_report_is_its_report_json(run):
    rep = run["reports"]["en"]
    assert isinstance(rep, FeaturesReport)
    assert rep.to_dict() == _json(run["root"] / "st_en" / "report.json")
    assert rep.n_failed == 1 and [f.utt_id for f in rep.failed] == [run["bad"]]
    assert rep.failed[0].error == "AudioError" and rep.ok == 7 and rep.rows_written > 7
    assert FeaturesReport.from_dict(rep.to_dict()) == rep


def test_each_shard_returns_its_own_report_and_the_merge_is_the_store_report(run):
    root = run["root"]
    for i, rep in enumerate(run["shards"]):
        assert rep.shard == f"{i}/2"
        assert rep.to_dict() == _json(root / "st_shard" / "shards" / f"s{i:04d}of0002" / "report.json")
    merged = merge_shard_reports(root / "st_shard")
    assert isinstance(merged, MergedFeaturesReport) and merged.complete and merged.n_shards == 2
    assert merged.to_dict() == _json(root / "st_shard" / "report.json")
    assert merged.ok == sum(r.ok for r in run["shards"]) == 15 and [f.utt_id for f in merged.failed] == [run["bad"]]
    assert set(merged.shards) == {"s0000of0002", "s0001of0002"}
    assert MergedFeaturesReport.from_dict(merged.to_dict()) == merged


def test_a_merge_of_no_shard_report_writes_the_keys_it_always_wrote(tmp_path):
    (tmp_path / "shards").mkdir()
    merged = merge_shard_reports(tmp_path)
    assert merged.to_dict() == _json(tmp_path / "report.json")
    assert "model" not in merged.to_dict() and merged.complete and merged.n_shards is None


def test_the_similarity_report_names_what_run_similarity_wrote(run):
    sim, root = run["sim"], run["root"]
    assert isinstance(sim, SimilarityReport)
    assert Path(sim.rankings) == root / "sim" / "rankings.json" and Path(sim.scores).is_file()
    assert sim.metrics == ("centroid_cosine", "coral") and Path(sim.vowel_map or "").is_file()
    assert list(sim.summary) == sim.to_dict()["summary"] and sim.summary


def test_rankings_and_selections_are_read_only_views_of_rankings_json(run):
    path = run["root"] / "sim" / "rankings.json"
    doc = read_rankings(path)
    assert isinstance(doc, Rankings) and doc.to_dict() == _json(path)
    assert doc.metric == "centroid_cosine" and doc.n_layers == 2 and doc["units"] is doc.units
    sel = load_selections(path, unit="Utt")
    assert isinstance(sel, Selections) and sel == _json(path)["units"]["Utt"]["selections"] == sel.to_dict()
    assert sel["BL"] == [sel.best] and list(sel) == ["final", "BL", "GL", "WL", "RL1", "RL2", "RL3"]
    sel["BL"].append(99)  # each lookup is a new list: the selection itself cannot change
    assert sel["BL"] == [sel.best]
    with pytest.raises(TypeError):
        sel["BL"] = [1]  # type: ignore[index]


def test_the_similarity_config_and_durations_are_what_the_files_hold(run):
    root = run["root"]
    result = compare_stores(FeatureStore.open(root / "st_en"), FeatureStore.open(root / "st_zh"),
                            metrics=("centroid_cosine", "coral"), n_bootstrap=10, progress=False)
    assert isinstance(result.config, SimilarityConfig) and isinstance(result.durations, DurationSummary)
    config = yaml.safe_load((root / "sim" / "config.yaml").read_text(encoding="utf-8"))
    assert {k: config[k] for k in result.config.to_dict()} == result.config.to_dict()
    assert result.durations.to_dict() == _json(root / "sim" / "rankings.json")["duration_s"]


def test_vowel_map_files_name_the_files_written(run):
    from analysis.vowel_map import vowel_maps, write_vowel_maps

    root = run["root"]
    maps = vowel_maps(FeatureStore.open(root / "st_en"), FeatureStore.open(root / "st_zh"), n_bootstrap=5)
    (root / "vm").mkdir()
    files = write_vowel_maps(maps, root / "vm", n_bootstrap=5)
    assert isinstance(files, VowelMapFiles)
    assert {k: p.name for k, p in files.to_dict().items()} == {
        "vowel_map": "vowel_map.parquet", "diagonal_advantage": "diagonal_advantage.parquet",
        "summary": "vowel_map.json"}
    assert all(p.is_file() for p in files.to_dict().values())


def test_position_share_is_typed():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((20, 4)), rng.standard_normal((30, 4)) + 1.0
    share = position_share(a, a * 0.5, b, b * 0.5)
    assert isinstance(share, PositionShare)
    assert share.energy_share == pytest.approx(0.25) and share.projection_share == pytest.approx(0.5)
    assert share.to_dict() == {"gap_norm": share.gap_norm, "position_gap_norm": share.position_gap_norm,
                               "projection_share": share.projection_share, "energy_share": share.energy_share}


@pytest.mark.parametrize("value", [
    FeaturesReport("m", None, "0/1", "in", 1, 0, 1, 0, 0, (), 2, 0.1, 0.2),
    UtteranceFailure("u", "AudioError", "bad", None, None, None),
    ShardSummary("0/2", 1, 0, 0, 1.0),
    MergedFeaturesReport({}, (), 0, 0, 0, 0, 0, 0.0, 0.0, 0, None, None, None, None, ()),
    SimilarityReport("r", "s", ("centroid_cosine",), (), ()),
    DurationSummary((1.0, 2.0, 3.0), None),
    PositionShare(1.0, 0.5, 0.2, 0.1),
    VowelMapFiles(Path("a"), Path("b"), Path("c")),
    Selections("Utt", {"BL": (1,)}),
    Rankings({"metric": "coral"}),
], ids=lambda v: type(v).__name__)
def test_the_results_are_frozen(value):
    name = dataclasses.fields(value)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(value, name, None)


#: (caller file, variable the result is bound to, the result's type): every ``variable.attribute``
#: the caller reads must be a field or property of the type.
CALLERS = [
    ("lam_train/commands/features.py", "report", FeaturesReport),
    ("lam_train/commands/similarity.py", "out_info", SimilarityReport),
    ("lam_train/pipeline.py", "rep", FeaturesReport),
]


@pytest.mark.parametrize(("path", "name", "cls"), CALLERS, ids=[c[0] for c in CALLERS])
def test_the_attributes_callers_read_exist(path, name, cls):
    text = (ROOT / path).read_text(encoding="utf-8")
    used = set(re.findall(rf"(?<![\w'\"/]){name}\.([A-Za-z_]\w*)", text))  # not a file name (OUT/report.json)
    assert used, f"{path} reads no attribute of {name}: the check would be empty"
    assert used <= _fields_and_properties(cls), used - _fields_and_properties(cls)
