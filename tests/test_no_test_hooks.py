"""No production signature carries a parameter that exists only for tests.

Tests give the toolkit a model the way users do (a local model folder, see
:func:`analysis.testing.random_model_dir`), inject faults with ``monkeypatch`` (as the resume
tests of ``test_train.py`` wrap ``save_checkpoint``), and find their helpers in
:mod:`analysis.testing`; production code does not bend its signatures for them.

The rule checked here, for every parameter that has a default or is keyword-only, of every public
function, method and class of ``phonalign``, ``analysis`` and ``lam_train`` (test helpers in
``analysis.testing`` excepted):

A parameter is a **test hook** when no production code gives it, and it shows that it is there for
tests:

* *no production code gives it*: no call in the three packages (the library and the ``lam``
  commands) passes it by keyword or position, no ``lam`` option of that name exists (the commands
  forward backend options by name), no code cell of a notebook and no docstring example passes it,
  and it is not a field of the run configuration (``lam_train.config``: those are set by users'
  YAML files);
* *it shows it is there for tests* by its **name** (:data:`HOOK_NAMES`: an injected encoder or
  model factory, fakes, mocks, stubs, ``*_for_test``, ``test_*``, hooks, ``on_*`` callbacks), by
  its **documentation** (its docstring entry, or the comment on its line, says tests use it), or by
  being a **callback** (annotated ``Callable``) that production code never supplies (an unused
  callback is at best dead weight).

Parameters that only tests happen to pass but that are documented options of the public API (a
notebook user's ``read_alignment(words_tier=...)``) are not hooks; the three signals tell the two
apart. The last test shows that each signal fires on a function written to break the rule.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from typer.main import get_command

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("phonalign", "analysis", "lam_train")
TEST_HELPERS = ("analysis.testing",)
#: Names that say a parameter is there to inject something a test wants.
HOOK_NAMES = re.compile(r"^(encoder|model|models|factory|\w+_factory|fake\w*|mock\w*|stub\w*|\w+_for_tests?|"
                        r"test_\w+|\w*hooks?|inject\w*|on_\w+)$")
#: Wording that says tests use a parameter ("tests use it", "for tests", "only for tests").
TEST_WORDING = re.compile(r"\btests? (use|uses|pass|passes|inject|injects)\b|\b(for|by|only for|only by) tests?\b|"
                          r"[;,(]\s*tests?\s*[);]?\s*$", re.I)


# ------------------------------------------------------------------------------------ production use
def _code_cells() -> Iterator[str]:
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(nb.read_text(encoding="utf-8"))["cells"]:
            if cell["cell_type"] == "code":
                yield "\n".join(line for line in "".join(cell["source"]).splitlines()
                                if not line.lstrip().startswith(("%", "!")))


def _docstring_examples(module: ModuleType) -> Iterator[str]:
    import doctest

    for test in doctest.DocTestFinder().find(module):
        yield "\n".join(ex.source for ex in test.examples)


def _library_modules() -> list[ModuleType]:
    out = []
    for pkg in PACKAGES:
        root = importlib.import_module(pkg)
        out.append(root)
        for info in pkgutil.walk_packages(root.__path__, pkg + "."):
            if not info.name.startswith(TEST_HELPERS):
                out.append(importlib.import_module(info.name))
    return out


def _call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def production_calls(sources: list[str]) -> dict[str, tuple[set[str], int]]:
    """callable name -> (keywords passed, most positional arguments passed) over ``sources``."""
    out: dict[str, tuple[set[str], int]] = {}
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (name := _call_name(node)):
                kws, npos = out.get(name, (set(), 0))
                kws |= {k.arg for k in node.keywords if k.arg}
                out[name] = (kws, max(npos, len(node.args)))
    return out


def _production_sources(modules: list[ModuleType]) -> list[str]:
    sources = [inspect.getsource(m) for m in modules]
    sources += [inspect.getsource(importlib.import_module(f"lam_train.commands.{p.stem}"))
                for p in (ROOT / "lam_train" / "commands").glob("*.py") if p.stem != "__init__"]
    sources += list(_code_cells())
    for m in modules:
        sources += list(_docstring_examples(m))
    return sources


def _cli_option_names() -> set[str]:
    from lam_train.cli import app

    return {p.name for cmd in get_command(app).commands.values() for p in cmd.params if p.name}


# ------------------------------------------------------------------------------------------- the rule
def _public_callables(modules: list[ModuleType]) -> Iterator[tuple[str, str, Callable[..., Any], bool]]:
    """(qualified name, name callers use, function, is a method) of every public function, method and class."""
    for module in modules:
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", name, obj, False
            elif inspect.isclass(obj):
                if module.__name__ == "lam_train.config":
                    continue  # run-configuration fields: set by users' YAML files
                for meth_name, meth in vars(obj).items():
                    if isinstance(meth, (staticmethod, classmethod)):
                        meth = meth.__func__
                    if inspect.isfunction(meth) and (meth_name == "__init__" or not meth_name.startswith("_")):
                        caller = name if meth_name == "__init__" else meth_name
                        yield f"{module.__name__}.{name}.{meth_name}", caller, meth, True


def _documented_for_tests(fn: Callable[..., Any], param: str) -> bool:
    doc = inspect.getdoc(fn) or ""
    entry = re.search(rf"^\s*{re.escape(param)}\b[^\n]*(\n(?!\s*\w+\s*:)[^\n]*)*", doc, re.M)
    if entry and TEST_WORDING.search(entry.group(0)):
        return True
    try:
        lines = inspect.getsource(fn).splitlines()
    except OSError:
        return False
    return any(re.search(rf"\b{re.escape(param)}\s*[:=]", line) and "#" in line
               and TEST_WORDING.search(line.split("#", 1)[1]) for line in lines[:40])


def _is_callback(fn: Callable[..., Any], param: str) -> bool:
    try:
        hint = typing.get_type_hints(fn).get(param)
    except Exception:  # an annotation that needs a name only imported for type checkers
        hint = inspect.signature(fn).parameters[param].annotation
    return "Callable" in str(hint)


def find_test_hooks(modules: list[ModuleType], calls: dict[str, tuple[set[str], int]],
                    cli_options: set[str]) -> list[str]:
    """``module.function(parameter): why`` for every parameter the rule of the module docstring flags."""
    hooks = []
    for qualname, caller, fn, is_method in _public_callables(modules):
        params = list(inspect.signature(fn).parameters.values())
        if is_method:
            params = params[1:]  # self / cls
        keywords, n_positional = calls.get(caller, (set(), 0))
        for i, p in enumerate(params):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            if p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
                continue  # required: every caller gives it
            given = p.name in keywords or p.name in cli_options or (
                p.kind is not p.KEYWORD_ONLY and i < n_positional)
            if given:
                continue
            reasons = [why for why, hit in (("its name says it is for tests", HOOK_NAMES.match(p.name)),
                                            ("its documentation says tests use it",
                                             _documented_for_tests(fn, p.name)),
                                            ("it is a callback", _is_callback(fn, p.name))) if hit]
            if reasons:
                hooks.append(f"{qualname}({p.name}): no production code gives it, and {'; '.join(reasons)}")
    return hooks


# ------------------------------------------------------------------------------------------------ tests
def test_no_production_signature_carries_a_parameter_only_tests_use():
    modules = _library_modules()
    calls = production_calls(_production_sources(modules))
    assert {"extract_features", "run_similarity", "run_pipeline", "align_corpus"} <= set(calls)  # not blind
    hooks = find_test_hooks(modules, calls, _cli_option_names())
    assert not hooks, "test hooks in production signatures:\n  " + "\n  ".join(hooks)


def test_the_rule_finds_each_kind_of_hook():
    module = ModuleType("lam_train.fake_room")
    source = '''
from collections.abc import Callable


def run_it(cfg, *, encoder=None, progress=True, on_step=None, slow_path=False, notify: Callable | None = None,
           seconds=1.0):
    """Run.

    Parameters
    ----------
    slow_path : bool
        Tests use it to force the slow path.
    """


def used(x, *, encoder=None):
    """Called with an encoder by production code below."""


def caller():
    """Production code."""
    used(1, encoder=2)
    run_it(0, progress=False)
'''
    exec(compile(source, "<fake_room>", "exec"), module.__dict__)  # noqa: S102 - a fixture module
    for obj in (module.run_it, module.used, module.caller):
        obj.__module__ = module.__name__
    calls = production_calls(["def caller" + source.split("def caller")[1]])
    hooks = find_test_hooks([module], calls, cli_options=set())
    flagged = sorted(h.split("(")[1].split(")")[0] for h in hooks)
    # the injected encoder (name), the on_* and Callable callbacks, the parameter documented for tests;
    # not `progress` (production passes it), `seconds` (a plain option), nor `used(encoder)` (given)
    assert flagged == ["encoder", "notify", "on_step", "slow_path"], hooks


def test_a_model_reaches_the_pipeline_as_users_give_it_a_folder(tmp_path):
    # the replacement of the removed encoder= parameters: a small random model saved as a folder
    from analysis.models import load_encoder
    from analysis.testing import random_model, random_model_dir

    path = random_model_dir("whisper", tmp_path / "tiny", n_layers=2)
    enc = load_encoder(str(path), device="cpu")
    reference = random_model("whisper", n_layers=2)
    assert enc.n_layers == 2 and enc.model_id == str(path)
    for name, tensor in reference.state_dict().items():  # the folder holds random_model's weights
        assert (enc.model.state_dict()[name] == tensor).all(), name
    assert "encoder" not in inspect.signature(importlib.import_module("lam_train.pipeline").run_pipeline).parameters
