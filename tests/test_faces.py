"""Each package's face: its entry points re-exported lazily, and the Examples of their docstrings run.

``import phonalign`` (or ``analysis``, ``lam_train``) must stay cheap: no torch, transformers or
pyarrow until a name that needs them is used. The Examples sections of the faces, of
:mod:`analysis.testing` and of the cheap entry points are run here as doctests (the expensive ones,
such as the whole pipeline, are marked ``+SKIP`` in their docstrings and run by their own tests).
"""

from __future__ import annotations

import doctest
import importlib
import subprocess
import sys
import tempfile

import pytest

FACES = ["phonalign", "analysis", "lam_train"]
#: modules whose docstring examples are cheap enough to run on every test run
DOCTESTED = ["phonalign", "analysis", "lam_train", "analysis.testing", "analysis.ct2", "phonalign.corpus",
             "phonalign.align.run", "analysis.extract", "analysis.similarity", "lam_train.pipeline",
             "phonalign.pinyin", "phonalign.text_norm", "phonalign.progress"]


def test_importing_the_three_packages_loads_no_heavy_dependency():
    code = ("import sys, phonalign, analysis, lam_train\n"
            "print(sorted(m for m in ('torch', 'transformers', 'pyarrow', 'praatio', 'matplotlib', 'numpy')"
            " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("face", FACES)
def test_every_entry_point_of_a_face_is_the_object_its_module_defines(face):
    package = importlib.import_module(face)
    names = [n for n in package.__all__ if n != "__version__"]
    assert names and set(names) == set(package._ENTRY_POINTS)
    for name in names:
        module = importlib.import_module(package._ENTRY_POINTS[name])
        value = getattr(package, name)
        assert value is getattr(module, name), name
        assert (value.__doc__ or "").strip(), f"{face}.{name} has no docstring"
        assert name in dir(package)
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # examples' scratch folders go here
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
