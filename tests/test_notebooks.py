"""The notebooks run top to bottom in a fresh kernel on the bundled demo corpus and show figures.

Each notebook is executed with nbclient in a new ``python3`` kernel. jupyter_client starts that
kernel with the interpreter running the tests (``sys.executable``: it replaces the ``python`` of
ipykernel's kernel spec), so the kernel sees this toolkit and its packages without any hand-made
kernel spec. ``LAM_NOTEBOOK_FAST=1`` makes the notebooks use a small randomly initialised model
and fewer seeds and epochs; every cell still runs. Set ``LAM_NOTEBOOK_KEEP=DIR`` to keep the
executed notebooks (with outputs) for a look.
"""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NAMES = ["01_alignment_and_vowel_classes", "02_layer_similarity", "03_layer_anchoring",
         "04_vowels_as_phoneticians_see_them"]
#: Seconds a single cell may take in fast mode on two shared CPU cores before the test fails.
CELL_TIMEOUT = 600


def _execute(name: str, work: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    env = {**os.environ, "LAM_NOTEBOOK_FAST": "1", "LAM_NOTEBOOK_DIR": str(work), "MPLBACKEND": "Agg",
           "PYTHONNOUSERSITE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}})
    try:
        client.execute(env=env)
    finally:
        keep = os.environ.get("LAM_NOTEBOOK_KEEP")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(keep) / f"{name}.ipynb")
    return nb


def _outputs(nb: nbformat.NotebookNode, output_type: str | None = None) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if output_type is None or o.get("output_type") == output_type]


def _png_outputs(nb: nbformat.NotebookNode) -> list[bytes]:
    return [base64.b64decode(o["data"]["image/png"]) for o in _outputs(nb)
            if o.get("output_type") in ("display_data", "execute_result") and "image/png" in o.get("data", {})]


def _inline_figures(nb: nbformat.NotebookNode) -> int:
    """Figures displayed from matplotlib ``Figure`` objects (not PNG files read back from disk)."""
    return sum(1 for o in _outputs(nb) if "image/png" in o.get("data", {})
               and o["data"].get("text/plain", "").startswith("<Figure"))


#: figures each notebook shows inline, every one a matplotlib ``Figure`` (the library's plot
#: functions return them: analysis.plots.result_figures, lam_train.report.uar_figure, ...)
INLINE_FIGURES = {"01_alignment_and_vowel_classes": 5, "02_layer_similarity": 5, "03_layer_anchoring": 3,
                  "04_vowels_as_phoneticians_see_them": 9}


def test_every_issue_notebook_exists_and_is_committed_without_outputs():
    found = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
    assert found == NAMES
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells)
                 if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)]
        assert not dirty, f"{name}: cells {dirty} hold outputs; strip them before committing"
        assert nb.metadata["kernelspec"]["name"] == "python3"


def test_notebooks_show_their_figures_inline_and_save_none_to_show_it():
    for name in NAMES:
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        code = [c.source for c in nb.cells if c.cell_type == "code"]
        assert code[0].startswith("%matplotlib inline"), name
        assert not any("savefig" in src for src in code), name
        # figures are the library's Figure objects, not image files read back from disk
        assert not any("Image(" in src or ".png" in src for src in code), name


def test_the_test_kernel_is_this_interpreter():
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    assert Path(km.format_kernel_cmd()[0]).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_in_a_fresh_kernel_and_shows_figures(name, tmp_path):
    nb = _execute(name, tmp_path)
    assert not _outputs(nb, "error")
    pngs = _png_outputs(nb)
    assert pngs, f"{name} displayed no figure"
    assert all(p[:8] == b"\x89PNG\r\n\x1a\n" and len(p) > 2000 for p in pngs)
    assert _inline_figures(nb) == len(pngs) >= INLINE_FIGURES[name]  # every image shown is a Figure
    if name == "01_alignment_and_vowel_classes":  # a table opened with .to_pandas() (notebooks extra)
        assert any("<table" in o.get("data", {}).get("text/html", "") for o in _outputs(nb, "execute_result"))
    # every code cell ran, in order
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1))
    # the notebook wrote only under its working folder
    assert any(tmp_path.iterdir())
