"""What the user sees: the library logs, ``lam`` decides how much is shown and how.

* Redirected to a file, a whole ``lam run`` writes a few dozen plain lines and no carriage return
  (no progress bar); on a terminal the same loops draw bars.
* ``-q`` keeps only warnings, ``-v`` adds debug lines (each training epoch); results still go to stdout.
* Library modules neither print nor choose a matplotlib backend.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from faultkit import env_one_thread, lam, synthetic_store, write_train_config

ROOT = Path(__file__).resolve().parents[1]
LAM = Path(sys.executable).with_name("lam")


def _tiny_run_config(tmp_path: Path) -> Path:
    from analysis.testing import random_model_dir

    model = random_model_dir("whisper", tmp_path / "whisper-tiny", n_layers=2)
    cfg = {"name": "tiny", "output": str(tmp_path / "out"), "unit": "Vowl", "seeds": [0],
           "strategies": ["final", "final+coral", "BL", "GL", "all"],
           "corpus": {"path": "lam-demo", "source_language": "en", "target_language": "zh", "limit_per_split": 2},
           "features": {"model": str(model), "whisper_mode": "trim", "device": "cpu"},
           "similarity": {"k": 1, "n_bootstrap": 20},
           "model": {"width": 8, "head_hidden": [8, 8, 8]},
           "train": {"epochs": 3, "batch_size": 4, "device": "cpu"}}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_lam_run_redirected_to_a_file_writes_plain_lines_and_no_carriage_returns(tmp_path):
    config = _tiny_run_config(tmp_path)
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:  # a file, as `lam run config.yaml > run.log 2>&1` gives it
        done = subprocess.run([str(LAM), "run", str(config)], stdout=fh, stderr=subprocess.STDOUT,
                              env=env_one_thread(), cwd=tmp_path, timeout=900)
    text = log.read_bytes().decode("utf-8")
    assert done.returncode == 0, text
    assert "\r" not in text and "\x1b[" not in text  # no progress bar, no terminal escapes
    lines = text.splitlines()
    # every step says when it starts and ends, loops say where they got to, each training run one line
    for expected in ("align ...", "align: done in", "features ...", "features: done in", "similarity: done in",
                     "aligning: ", "features ", "similarity: 3/3 layer", "Report: "):
        assert any(expected in line for line in lines), (expected, text)
    # warnings (here: one speaker per side, a flat profile) once each, with their level
    warnings = [line for line in lines if line.startswith("WARNING: ")]
    assert len(warnings) == 2 and len(set(warnings)) == 2, text
    runs = [line for line in lines if " seed 0: layers " in line]
    assert len(runs) == 7  # 5 strategies + the lambda = 0 twins of BL and GL (final+coral's is final)
    assert 20 <= len(lines) <= 80, text


def test_progress_draws_a_bar_only_on_a_terminal(monkeypatch, caplog):
    from phonalign import progress as progress_module
    from phonalign.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(4, desc="aligning", item="utt") as bar:
        for _ in range(4):
            bar.update(1)
    assert "\r" in terminal.getvalue() and "aligning" in terminal.getvalue()

    redirected = io.StringIO()  # not a terminal: no bar, plain log records
    monkeypatch.setattr(sys, "stderr", redirected)
    monkeypatch.setattr(progress_module, "LINE_INTERVAL", 0.0)  # a line per update
    with caplog.at_level(logging.INFO, logger="phonalign.progress"):
        with progress_bar(3, desc="aligning", item="utt") as bar:
            for _ in range(3):
                bar.update(1)
        with progress_bar(3, desc="hidden", item="utt", progress=False) as bar:
            bar.update(3)
    assert "\r" not in redirected.getvalue() and "%|" not in redirected.getvalue()  # no bar drawn
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1].startswith("aligning: 3/3 utt (") and len(messages) == 4  # 3 updates + the end
    assert not any("hidden" in m for m in messages)


def test_quiet_keeps_warnings_and_verbose_adds_each_epoch(tmp_path, capsys):
    src = synthetic_store(tmp_path / "src", language="en")
    tgt = synthetic_store(tmp_path / "tgt", language="zh", seed=1)
    results = {}
    for flags in ((), ("-q",), ("-v",)):
        out = tmp_path / f"out{''.join(flags)}"
        config = write_train_config(tmp_path / "c.yaml", source=src, target=tgt, output=out, epochs=2)
        raw = yaml.safe_load(config.read_text())
        raw["train"]["progress"] = True
        config.write_text(yaml.safe_dump(raw))
        code, stdout, stderr = lam(capsys, *flags, "train", config)
        assert code == 0, stderr
        assert "Report: " in stdout  # the result is printed whatever the level
        results[flags] = stderr
    default, quiet, verbose = results[()], results[("-q",)], results[("-v",)]
    assert "1/1 final seed 0: layers" in default and "epoch" not in default
    assert quiet.strip() == ""
    assert "final seed 0: 2/2 epoch" in verbose and "1/1 final seed 0" in verbose


LIBRARY = [p for pkg in ("phonalign", "analysis", "lam_train") for p in (ROOT / pkg).rglob("*.py")
           if "commands" not in p.parts and p.name != "cli.py"]


@pytest.mark.parametrize("path", LIBRARY, ids=[str(p.relative_to(ROOT)) for p in LIBRARY])
def test_library_code_neither_prints_nor_chooses_a_matplotlib_backend(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    prints = [c.lineno for c in calls if isinstance(c.func, ast.Name) and c.func.id == "print"]
    backend = [c.lineno for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "use"
               and isinstance(c.func.value, ast.Name) and c.func.value.id == "matplotlib"]
    pyplot = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom | ast.Import)
              and any(a.name in ("matplotlib.pyplot", "pyplot") for a in n.names)
              or isinstance(n, ast.ImportFrom) and n.module == "matplotlib.pyplot"]
    assert not prints, f"print() at lines {prints}: log with logging.getLogger(__name__)"
    assert not backend, f"matplotlib.use() at lines {backend}: leave the backend to the application"
    assert not pyplot, f"pyplot imported at lines {pyplot}: build matplotlib.figure.Figure objects"


def test_the_command_line_starts_without_loading_the_heavy_libraries():
    code = ("import sys, lam_train.cli\n"
            "print(sorted(m for m in ('torch', 'transformers', 'pyarrow', 'matplotlib', 'numpy') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.stdout.strip() == "[]"
