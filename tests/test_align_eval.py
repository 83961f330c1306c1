"""Alignment accuracy (`lam align-eval`): sequence matching, boundary errors, and pocketsphinx's
accuracy on the demo corpus against espeak-ng's exact boundaries."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from phonalign.align_eval import compare_alignments, edit_distance, evaluate_dirs, summarize
from phonalign.corpus import demo_corpus_dir
from phonalign.records import Alignment, Interval, Utterance

DEMO = demo_corpus_dir()


def _al(phones: list[tuple[float, float, str]], xmax: float | None = None) -> Alignment:
    ivs = tuple(Interval(s, e, lab) for s, e, lab in phones)
    return Alignment(words=(), phones=ivs, xmin=0.0, xmax=xmax if xmax is not None else ivs[-1].end)


def test_identical_alignments_have_zero_error_and_full_agreement():
    ref = _al([(0, 0.1, ""), (0.1, 0.2, "K"), (0.2, 0.35, "AE"), (0.35, 0.45, "T"), (0.45, 0.6, "")])
    res = compare_alignments(ref, ref, hyp_phone_set="arpabet", ref_phone_set="arpabet")
    assert res.common == "arpabet" and res.agreement == 1.0 and res.edits == 0
    # onsets of K, AE, T and the end of T
    assert res.errors.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_a_15_ms_shift_is_within_20_but_not_within_10_ms():
    ref = _al([(0, 0.1, ""), (0.1, 0.2, "K"), (0.2, 0.35, "AE"), (0.35, 0.45, "T"), (0.45, 0.6, "")])
    hyp = _al([(0, 0.115, ""), (0.115, 0.215, "K"), (0.215, 0.365, "AE"), (0.365, 0.465, "T"), (0.465, 0.6, "")])
    stats = summarize(compare_alignments(hyp, ref, hyp_phone_set="arpabet", ref_phone_set="arpabet").errors)
    assert stats.boundaries == 4
    assert stats.mean_abs_ms == pytest.approx(15.0)
    assert stats.within_10ms == 0.0 and stats.within_20ms == 1.0 and stats.within_50ms == 1.0


def test_espeak_rhotic_vowel_matches_two_arpabet_phones_and_its_inner_boundary_is_not_scored():
    # espeak "warm" = w O@ m; pocketsphinx writes W AO R M
    ref = _al([(0.0, 0.1, "w"), (0.1, 0.3, "O@"), (0.3, 0.4, "m")])
    hyp = _al([(0.0, 0.1, "W"), (0.1, 0.2, "AO"), (0.2, 0.31, "R"), (0.31, 0.4, "M")])
    res = compare_alignments(hyp, ref, hyp_phone_set="arpabet", ref_phone_set="espeak_en")
    assert res.n_ref == 4 and res.n_match == 4
    # onsets of W, AO (=O@ start), M (=O@ end, 10 ms late) and the end of M; not the AO|R boundary
    assert np.round(res.errors, 6).tolist() == [0.0, 0.0, 0.01, 0.0]


def test_a_phone_without_counterpart_breaks_the_chain_of_matches():
    # espeak ";" (linking j) has no ARPAbet phone: the onset after it is not compared
    ref = _al([(0.0, 0.1, "I2"), (0.1, 0.15, ";"), (0.15, 0.3, "oU")])
    hyp = _al([(0.0, 0.12, "IH"), (0.12, 0.3, "OW")])
    res = compare_alignments(hyp, ref, hyp_phone_set="arpabet", ref_phone_set="espeak_en")
    assert res.n_match == 2 and res.edits == 1
    assert res.errors.size == 2  # IH onset and OW end; not OW's onset


def test_mandarin_against_itself_uses_labels_and_english_against_mandarin_uses_classes():
    zh = _al([(0.0, 0.1, "m"), (0.1, 0.2, "a"), (0.2, 0.3, "")])
    assert compare_alignments(zh, zh, hyp_phone_set="espeak_cmn", ref_phone_set="espeak_cmn").common == "label"
    en = _al([(0.0, 0.1, "M"), (0.1, 0.2, "AA"), (0.2, 0.3, "")])
    res = compare_alignments(en, zh, hyp_phone_set="arpabet", ref_phone_set="espeak_cmn")
    assert res.common == "class" and res.agreement == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abc"), max_size=8), st.lists(st.sampled_from("abc"), max_size=8))
def test_edit_distance_equals_the_textbook_recursion(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        for j in range(len(b) + 1):
            if i == 0 or j == 0:
                table[i][j] = i + j
            else:
                table[i][j] = min(table[i - 1][j] + 1, table[i][j - 1] + 1,
                                  table[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
    assert edit_distance(a, b) == table[-1][-1]


def _copy_refs(ids: list[str], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for u in ids:
        shutil.copy(DEMO / "textgrids" / f"{u}.TextGrid", dest / f"{u}.TextGrid")
    return dest


def test_cli_prints_tables_and_writes_json_with_missing_and_unreadable_files(tmp_path):
    from lam_train.cli import app

    ids = ["en_m1_s00_neu", "en_f2_s03_sad", "zh_m3_s05_hap"]
    hyp = _copy_refs(ids, tmp_path / "hyp")
    (hyp / "broken.TextGrid").write_text("not a textgrid", encoding="utf-8")
    ref = _copy_refs(ids + ["en_m3_s09_ang"], tmp_path / "ref")
    (ref / "broken.TextGrid").write_text("not a textgrid either", encoding="utf-8")
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(app, ["align-eval", str(hyp), str(ref), "--json", str(out),
                                      "--manifest", str(DEMO / "manifest.csv")])
    assert result.exit_code == 0, result.output
    assert "Alignment accuracy" in result.output and "zh" in result.output
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["overall"]["within_10ms"] == 1.0 and report["overall"]["agreement"] == 1.0
    assert set(report["by_language"]) == {"en", "zh"}
    assert report["missing_hyp"] == ["en_m3_s09_ang"]
    assert [f["utt_id"] for f in report["failed"]] == ["broken"]


@pytest.mark.slow
def test_pocketsphinx_on_english_demo_meets_the_accuracy_targets(tmp_path):
    """At least 75% of boundaries within 20 ms and 95% within 50 ms of espeak's (closure-corrected)
    boundaries, on 30 English utterances that cover every speaker, sentence and emotion. The full
    English half is measured with `lam align` + `lam align-eval` (docs/demo_corpus.md)."""
    from phonalign.align.pocketsphinx_backend import PocketsphinxAligner
    from phonalign.textgrid_io import write_alignment

    with open(DEMO / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["language"] == "en"]
    # 30 of 120 (rows go speaker, sentence, emotion): every speaker x sentence, emotions in turn
    rows = [rows[4 * k + k % 4] for k in range(30)]
    assert {r["emotion"] for r in rows} == {"Neutral", "Happiness", "Anger", "Sadness"}
    utts = [Utterance(r["utt_id"], str(DEMO / r["audio_path"]), r["text"], "en", r["speaker"], "lam-demo")
            for r in rows]
    hyp = tmp_path / "hyp"
    for res in PocketsphinxAligner().align(utts, tmp_path / "work", jobs=2):
        assert res.ok, res.error
        write_alignment(hyp / f"{res.utt_id}.TextGrid", res.alignment)
    report = evaluate_dirs(hyp, DEMO / "textgrids", utt_ids=[u.utt_id for u in utts])
    overall = report.overall
    assert report.common_phone_set == ("arpabet",)
    assert overall.utterances == 30 and overall.boundaries > 700
    assert overall.agreement is not None and overall.agreement > 0.9
    assert overall.within_20ms is not None and overall.within_20ms >= 0.75, overall
    assert overall.within_50ms is not None and overall.within_50ms >= 0.95, overall


def test_languages_come_from_an_utterances_parquet_or_a_csv(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from phonalign.align_eval import AlignEvalError, read_languages

    pq.write_table(pa.table({"utt_id": ["a", "b"], "language": ["en", "zh"], "text": ["x", "y"]}),
                   tmp_path / "utterances.parquet")
    assert read_languages(tmp_path / "utterances.parquet") == {"a": "en", "b": "zh"}
    (tmp_path / "m.tsv").write_text("utt_id\tlanguage\na\ten\n", encoding="utf-8")
    assert read_languages(tmp_path / "m.tsv") == {"a": "en"}
    (tmp_path / "bad.csv").write_text("id,lang\na,en\n", encoding="utf-8")
    with pytest.raises(AlignEvalError, match="utt_id and language"):
        read_languages(tmp_path / "bad.csv")


# --- the report: typed in Python, the same JSON as before -----------------------------------------
GOLDEN = Path(__file__).parent / "data" / "golden" / "align_eval_report.json"


def _perturbed_dirs(root: Path) -> tuple[Path, Path]:
    """References (demo TextGrids of both languages) and hypotheses with inner boundaries moved by up
    to 14 ms, one phone relabelled, one hypothesis missing, one unreadable, one extra."""
    from phonalign.textgrid_io import read_alignment, write_alignment

    ids = ["en_m1_s00_neu", "en_f2_s03_sad", "en_m3_s09_ang", "zh_m3_s05_hap", "zh_f2_s01_ang"]
    ref = _copy_refs(ids, root / "ref")
    hyp = root / "hyp"
    hyp.mkdir()
    for n, u in enumerate(ids[:-1]):
        a = read_alignment(ref / f"{u}.TextGrid")
        edges = [a.phones[0].start] + [iv.end for iv in a.phones]
        # each inner boundary moved by up to 14 ms, never past a third of its neighbouring intervals
        moved = {b: b + min(0.007 * abs((k + n) % 5 - 2), (b - p) / 3, (q - b) / 3) * (1 if (k + n) % 5 > 2 else -1)
                 for k, (p, b, q) in enumerate(zip(edges, edges[1:-1], edges[2:], strict=False))}
        phones = tuple(Interval(moved.get(iv.start, iv.start), moved.get(iv.end, iv.end),
                                "x9" if (u == "en_f2_s03_sad" and k == 3) else iv.label)
                       for k, iv in enumerate(a.phones))
        words = tuple(Interval(moved.get(iv.start, iv.start), moved.get(iv.end, iv.end), iv.label) for iv in a.words)
        write_alignment(hyp / f"{u}.TextGrid", Alignment(words=words, phones=phones, xmin=a.xmin, xmax=a.xmax))
    (hyp / "broken.TextGrid").write_text("not a textgrid", encoding="utf-8")
    (ref / "broken.TextGrid").write_text("not a textgrid either", encoding="utf-8")
    shutil.copy(ref / f"{ids[0]}.TextGrid", hyp / "only_in_hyp.TextGrid")
    return hyp, ref


def _normalised(report: dict, root: Path) -> str:
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False).replace(str(root), "<TMP>") + "\n"


def test_the_json_report_is_what_the_untyped_report_was(tmp_path):
    """The golden file is ``evaluate_dirs`` of these folders as the untyped code returned it (7800c9e)."""
    hyp, ref = _perturbed_dirs(tmp_path)
    report = evaluate_dirs(hyp, ref, languages={"only_in_hyp": "en"})
    assert _normalised(report.to_dict(), tmp_path) == GOLDEN.read_text(encoding="utf-8")


def test_the_report_is_typed(tmp_path):
    from phonalign.align_eval import AlignEvalReport, BoundaryStats

    hyp, ref = _perturbed_dirs(tmp_path)
    report = evaluate_dirs(hyp, ref)
    assert isinstance(report, AlignEvalReport) and isinstance(report.overall, BoundaryStats)
    assert set(report.by_language) == {"en", "zh"} and report.missing_hyp == ("zh_f2_s01_ang",)
    assert report.missing_ref == ("only_in_hyp",) and [f.utt_id for f in report.failed] == ["broken"]
    assert report.overall.boundaries == report.edges.boundaries + report.interior.boundaries > 50
    assert 0.5 < (report.overall.within_10ms or 0) < 1.0 and report.overall.within_20ms == 1.0
    assert report.edge_to_interior == pytest.approx(report.edges.mean_abs_ms / report.interior.mean_abs_ms)
