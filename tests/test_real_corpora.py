"""Real corpora end to end: English read speech aligned by pocketsphinx, THCHS-30 Mandarin imported from
its Charsiu TextGrids (and one AISHELL-1 utterance without one), through features and similarity; `lam
run` stops before training with one line, since these corpora carry no emotion labels (tests/data/real,
see THIRD_PARTY.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from lam_train.cli import app

REAL = Path(__file__).resolve().parent / "data" / "real"



def test_lam_run_on_real_english_and_mandarin_stops_before_training_for_want_of_labels(tmp_path, tiny_whisper_dir):
    config = {
        "name": "real", "output": "out", "unit": "Vowl", "seeds": [0], "strategies": ["final", "GL"],
        "corpus": {"path": str(REAL / "en"), "target_path": str(REAL / "zh"),
                   "source_language": "en", "target_language": "zh",
                   "source": {"aligner": "pocketsphinx"},
                   "target": {"aligner": "textgrid"}},  # the Charsiu TextGrids beside the audio
        "features": {"model": str(tiny_whisper_dir), "whisper_mode": "trim", "device": "cpu"},
        "similarity": {"k": 1, "n_bootstrap": 0},
        "train": {"device": "cpu"},
    }
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    runner = CliRunner()
    dry = runner.invoke(app, ["run", str(path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "pocketsphinx aligner" in dry.output and "textgrid aligner" in dry.output
    assert "stops here: the source corpus carries no emotion labels" in dry.output

    res = runner.invoke(app, ["run", str(path), "--no-progress"])
    # 3: alignment, features and similarity are complete; training had nothing to learn from
    assert res.exit_code == 3, res.output
    stop_lines = [line for line in res.output.splitlines() if "stopped before training" in line]
    assert len(stop_lines) == 1 and "carries no emotion labels" in stop_lines[0]
    out = tmp_path / "out"
    # the Mandarin folder also holds an AISHELL-1 utterance with a transcript and no TextGrid: the
    # import fails for it alone, says why, and the run goes on with the two THCHS-30 utterances
    for side, n, failed in (("source", 7, 0), ("target", 2, 1)):
        report = json.loads((out / "aligned" / side / "report.json").read_text())
        assert report["counts"]["ok"] == n and report["counts"]["failed"] == failed, report["utterances"]
        assert report["counts"]["suspect"] == 0, [u for u in report["utterances"] if u.get("suspect")]
        assert (out / "features" / side / "meta.json").is_file()
    zh = json.loads((out / "aligned" / "target" / "report.json").read_text())
    (aishell,) = [u for u in zh["utterances"] if u["status"] == "failed"]
    assert aishell["utt_id"] == "BAC009S0724W0121" and aishell["error"] == "TextGridError"
    assert zh["phone_sets"] == {"zh": "pinyin"} and zh["unknown_labels"] == {}  # Charsiu's [SIL] is silence
    assert zh["counts"]["by_class"]["silence"] > 0
    en = pq.read_table(out / "aligned" / "source" / "segments.parquet", columns=["phone_set", "unit_class"])
    assert set(en.column("phone_set").to_pylist()) == {"arpabet"}
    assert "unknown" not in en.column("unit_class").to_pylist()
    rankings = json.loads((out / "similarity" / "rankings.json").read_text())
    assert "Vowl" in rankings["units"] and "Utt" in rankings["units"]
    assert not (out / "runs").exists() and not (out / "report").exists()
    # a rerun skips what is done and stops at the same place
    again = runner.invoke(app, ["run", str(path), "--no-progress"])
    assert again.exit_code == 3 and again.output.count("done earlier, skipped") == 3


def test_charsiu_pinyin_finals_can_be_kept_to_single_vowels_and_the_inventory_counts_the_rest(tmp_path):
    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import read_corpus
    from phonalign.inventory import corpus_inventory
    from phonalign.phonesets import ClassOptions

    utts = read_corpus(REAL / "zh", language="zh")
    counts = {}
    for mode in ("all", "simple"):
        out = tmp_path / mode
        align_corpus(utts, out, get_aligner("textgrid"), progress=False,
                     options=ClassOptions(vowel_segments=mode))
        inv = corpus_inventory(out)["zh"]
        seg = pq.read_table(out / "segments.parquet").to_pydict()
        vowels = {p for p, c in zip(seg["phone"], seg["unit_class"], strict=True)
                  if c in ("A", "E", "@", "i", "O", "u")}
        counts[mode] = (sum(inv["classes"][c] for c in ("A", "E", "@", "i", "O", "u")), inv["excluded"], vowels)
    n_all, excl_all, _ = counts["all"]
    n_simple, excl_simple, vowels = counts["simple"]
    assert excl_all == {}
    # every final with a medial or a coda (iang, uan, ing, ...) is left out and counted; the rest are
    # single vowels
    assert vowels <= {"a", "o", "e", "ê", "i", "u", "ü", "v", "er"}
    assert {"iang", "ing", "ian"} <= set(excl_simple)
    assert n_simple + sum(excl_simple.values()) == n_all and sum(excl_simple.values()) > n_all / 3


def test_a_character_transcript_that_differs_from_the_word_tier_is_reported_for_that_utterance(tmp_path):
    import shutil

    from phonalign.align import get_aligner
    from phonalign.align.run import align_corpus
    from phonalign.corpus import read_corpus

    corpus = tmp_path / "zh"
    shutil.copytree(REAL / "zh", corpus)
    lab = corpus / "thchs_A2" / "A2_1.lab"
    text = lab.read_text(encoding="utf-8").strip()
    lab.write_text(text[:5] + "猫" + text[6:], encoding="utf-8")  # one character replaced
    report = align_corpus(read_corpus(corpus, language="zh"), tmp_path / "out", get_aligner("textgrid"),
                          progress=False)
    items = {u.utt_id: u for u in report.utterances}
    assert not items["A2_0"].suspect
    reason = items["A2_1"].suspect_reason or ""
    assert items["A2_1"].suspect and "word tier differs from the transcript" in reason
    assert "'猫'" in reason and "token 6" in reason


@pytest.mark.parametrize("label, cls", [("[SIL]", "silence"), ("sil", "silence"), ("sp", "silence"),
                                        ("<eps>", "silence"), ("<sil>", "silence"), ("{SL}", "silence"),
                                        ("[laughter]", "unknown"), ("<unk>", "unknown"), ("spn", "unknown")])
def test_pause_and_noise_markers_of_mandarin_aligners(label, cls):
    from phonalign.phonesets import classify

    assert classify([label], phone_set="pinyin")[0].unit_class == cls
