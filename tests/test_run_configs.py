"""Every config shipped in lam_train/configs/: loads, dry-runs (printing exact `mfa` commands), and runs
end to end; aligner options per side with line-numbered errors.

The MSP-Podcast -> BIIC-Podcast example needs MFA, which pip cannot install; its end-to-end run puts
a *fake* `mfa` on PATH: a small script, written by the test, that copies prepared TextGrids (the demo
corpus' ground truth) into MFA's output layout and says in its log that it is a fake. What this
proves is everything around MFA (config -> staging -> the exact command -> reading MFA's output ->
features -> similarity -> training); MFA's own accuracy is the real-MFA test's business
(tests/test_mfa.py, marked `mfa`).
"""

from __future__ import annotations

import csv
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lam_train.cli import app
from lam_train.config import load_config
from lam_train.errors import ConfigError
from lam_train.pipeline import plan_pipeline, run_pipeline
from phonalign.corpus import demo_corpus_dir

CONFIGS = Path(__file__).resolve().parents[1] / "lam_train" / "configs"
SHIPPED = sorted(p.name for p in CONFIGS.glob("*.yaml"))

FAKE_MFA = """#!{python}
# A FAKE `mfa` for tests (not the Montreal Forced Aligner): `mfa align CORPUS DICT MODEL OUTPUT ...`
# copies $FAKE_MFA_TEXTGRIDS/<utt_id>.TextGrid to OUTPUT/<speaker>/<utt_id>.TextGrid for every
# staged CORPUS/<speaker>/<utt_id>.lab, and records its command line.
import os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
assert args[0] == "align", args
corpus, output = Path(args[1]), Path(args[4])
src = Path(os.environ["FAKE_MFA_TEXTGRIDS"])
n = 0
for lab in sorted(corpus.glob("*/*.lab")):
    tg = src / (lab.stem + ".TextGrid")
    if tg.is_file():
        (output / lab.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(tg, output / lab.parent.name / tg.name)
        n += 1
with open(os.environ["FAKE_MFA_LOG"], "a", encoding="utf-8") as log:
    log.write(" ".join(sys.argv) + "\\n")
print(f"fake mfa (a test stand-in, not MFA): copied {{n}} prepared TextGrids")
"""



@pytest.fixture
def fake_mfa(tmp_path, monkeypatch):
    """A fake `mfa` on PATH that copies the demo corpus' ground-truth TextGrids; returns its log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "mfa"
    exe.write_text(FAKE_MFA.format(python=sys.executable), encoding="utf-8")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    log = tmp_path / "fake_mfa_calls.txt"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MFA_TEXTGRIDS", str(demo_corpus_dir() / "textgrids"))
    monkeypatch.setenv("FAKE_MFA_LOG", str(log))
    return log


def _msp_and_biic(root: Path) -> tuple[Path, Path]:
    """The demo corpus laid out as the example config expects: English as an MSP-Podcast release
    (Audios/, Labels/labels_consensus.csv, Transcripts/), Mandarin as a BIIC-Podcast manifest."""
    demo = demo_corpus_dir()
    rows = list(csv.DictReader(open(demo / "manifest.csv", encoding="utf-8")))
    msp = root / "data" / "MSP-Podcast"
    for sub in ("Audios", "Labels", "Transcripts"):
        (msp / sub).mkdir(parents=True)
    letters = {"Neutral": "N", "Happiness": "H", "Anger": "A", "Sadness": "S"}
    splits = {"train": "Train", "dev": "Development", "test": "Test1"}
    with open(msp / "Labels" / "labels_consensus.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["FileName", "EmoClass", "SpkrID", "Split_Set"])
        for r in rows:
            if r["language"] != "en":
                continue
            name = f"{r['utt_id']}.flac"
            shutil.copy(demo / r["audio_path"], msp / "Audios" / name)
            (msp / "Transcripts" / f"{r['utt_id']}.txt").write_text(r["text"], encoding="utf-8")
            w.writerow([name, letters[r["emotion"]], r["speaker"], splits[r["split"]]])
    biic = root / "data" / "BIIC-Podcast"
    biic.mkdir(parents=True)
    with open(biic / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["utt_id", "audio_path", "text", "language", "speaker", "split"])
        for r in rows:
            if r["language"] == "zh":
                w.writerow([r["utt_id"], str(demo / r["audio_path"]), r["text"], "zh", r["speaker"], r["split"]])
    return msp, biic / "manifest.csv"


def _small(raw: dict, out: Path, model: Path) -> dict:
    """Overrides that keep a shipped config's structure but make it run in seconds."""
    corpus = dict(raw.get("corpus", {}))
    corpus["limit_per_split"] = 2
    return {"output": str(out), "seeds": [0], "strategies": ["final", "GL"],
            "corpus": corpus,
            "features": {"model": str(model), "device": "cpu", "batch_seconds": 60.0},
            "similarity": {"n_bootstrap": 0, "k": 1},
            "model": {"width": 8, "head_hidden": [8, 8, 8]},
            "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "amp": False, "progress": False}}


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_dry_runs_and_prints_the_plan(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if name == "example_msp_to_biic.yaml":
        # its corpus paths are relative to the config: lay the data out beside a copy of it
        msp, biic = _msp_and_biic(tmp_path)
        shutil.copy(CONFIGS / name, tmp_path / name)
        path = tmp_path / name
    else:
        path = CONFIGS / name
    cfg = load_config(path, overrides={"output": str(tmp_path / "out")})
    lines = plan_pipeline(cfg)
    text = "\n".join(lines)
    for step in ("align:", "features:", "similarity:", "train:"):
        assert step in text, text
    if name == "example_msp_to_biic.yaml":
        # the exact commands, one MFA model per side
        en = next(line for line in lines if "mfa align" in line and "english_us_arpa" in line)
        zh = next(line for line in lines if "mfa align" in line and "mandarin_mfa" in line)
        assert f"{tmp_path / 'out' / 'aligned' / 'source' / 'work' / 'mfa' / 'corpus'}" in en
        assert "english_us_arpa english_us_arpa" in en and "--retry_beam 40" in en
        assert f"{tmp_path / 'out' / 'aligned' / 'target'}" in zh
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out2"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "align:" in res.output and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_runs_end_to_end(name, tmp_path, monkeypatch, tiny_whisper_dir, fake_mfa):
    raw = yaml.safe_load((CONFIGS / name).read_text(encoding="utf-8"))
    path = tmp_path / name
    shutil.copy(CONFIGS / name, path)
    if name == "example_msp_to_biic.yaml":
        _msp_and_biic(tmp_path)
    cfg = load_config(path, overrides=_small(raw, tmp_path / "out", tiny_whisper_dir))
    res = run_pipeline(cfg, progress=False)
    assert res.report is not None and Path(res.report.markdown).is_file()
    assert (tmp_path / "out" / "report" / "results.md").is_file()
    uses_mfa = any(cfg.corpus.aligner_for(side)[0] == "mfa" for side in ("source", "target"))
    if uses_mfa:
        calls = fake_mfa.read_text(encoding="utf-8").splitlines()
        assert len(calls) == 2  # one `mfa align` per side, with that side's models
        assert " english_us_arpa english_us_arpa " in calls[0] and " mandarin_mfa mandarin_mfa " in calls[1]


def test_a_config_with_mfa_on_one_side_and_imported_textgrids_on_the_other_validates_each_side(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("corpus:\n  path: lam-demo\n  source:\n    aligner: pocketsphinx\n    options:\n"
                 "      g2p: espeak\n  target:\n    aligner: textgrid\n    options:\n      textgrids: tg/\n")
    cfg = load_config(p)
    assert cfg.corpus.aligner_for("source") == ("pocketsphinx", {"g2p": "espeak"})
    assert cfg.corpus.aligner_for("target") == ("textgrid", {"textgrids": str((tmp_path / "tg").resolve())})


@pytest.mark.parametrize("text, line, fragment", [
    ("corpus:\n  path: x\n  aligner: nonsense\n", 3, "corpus.aligner: 'nonsense' is not one of textgrid, mfa"),
    ("corpus:\n  path: x\n  source:\n    aligner: mfa\n    options:\n      dictionary: english_us_arpa\n"
     "      acoustic_model: english_us_arpa\n      beam: ten\n", 8, "corpus.source.options.beam: expected an integer"),
    ("corpus:\n  path: x\n  target:\n    aligner: mfa\n", 3, "the 'mfa' aligner needs dictionary, acoustic_model"),
    ("corpus:\n  path: x\n  target:\n    aligner: pocketsphinx\n    options:\n      paddin: 0.2\n", 6,
     "has no option 'paddin'"),
    ("corpus:\n  path: x\n  source:\n    aligner: pocketsphinx\n    options:\n      g2p: festival\n", 6,
     "'festival' is not one of espeak"),
])
def test_bad_aligner_settings_are_config_errors_with_the_line(tmp_path, text, line, fragment):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert fragment in str(err.value) and err.value.line == line, str(err.value)
    assert f"{p}:{line}" in str(err.value)


def test_backend_constructor_errors_become_one_line_lam_errors():
    from phonalign.align import get_aligner
    from phonalign.errors import AlignerError

    with pytest.raises(AlignerError, match="needs --dictionary, --acoustic-model"):
        get_aligner("mfa")
    with pytest.raises(AlignerError, match="retry_beam"):
        get_aligner("mfa", dictionary="d", acoustic_model="m", beam=20, retry_beam=10)
    with pytest.raises(AlignerError, match="has no option"):
        get_aligner("pocketsphinx", beams=3)


@pytest.mark.parametrize("backend", ["textgrid", "mfa", "pocketsphinx"])
def test_each_declaration_matches_its_backend_constructor(backend):
    import importlib
    import inspect

    from phonalign.align import ALIGNERS
    from phonalign.align.options import DECLARED

    module, cls = ALIGNERS[backend].split(":")
    params = inspect.signature(getattr(importlib.import_module(module), cls)).parameters
    declared = {o.name: o for o in DECLARED[backend]}
    assert list(declared) == [p for p in params]
    for name, opt in declared.items():
        default = params[name].default
        if default is not inspect.Parameter.empty:
            assert opt.default == default, name


def test_lam_align_flags_come_from_the_declaration():
    from phonalign.align.options import DECLARED

    res = CliRunner().invoke(app, ["align", "--help"], env={"COLUMNS": "250"})
    offered = {o.cli_flag for opts in DECLARED.values() for o in opts if o.cli}
    for opts in DECLARED.values():
        for o in opts:
            if o.cli:
                assert o.cli_flag in res.output, o.name
            elif o.cli_flag not in offered and o.name != "phone_set":  # --phone-set is the runner's own
                assert o.cli_flag not in res.output, o.name  # config-only decoder settings
