"""One name and one default per setting, whichever way it is reached: ``lam``, a run config, or the library.

A setting travels along three kinds of seams, and each is checked for every setting that crosses
it, found by reading the code (``ast``) rather than from a list kept by hand, so that an option
added later with another name or another default fails here:

1. **command line -> library**: inside each ``lam`` verb, a call to a library function (or class)
   whose keyword argument is one of the verb's own parameters, passed as it came (``f(k=k)``):
   the keyword must be the parameter's name (or the parameter is one role of it:
   ``source_language`` -> ``language``), and the option's default (what the function receives
   when the option is not given, after its callback) must equal the library's default.
2. **run config -> library**: in ``lam_train``, a call whose keyword argument is a field of a
   ``RunConfig`` section (``cfg.features.whisper_mode``, or ``f.whisper_mode`` after
   ``f = cfg.features``): the keyword is the field's name and the field's default is the library's.
3. **library -> library**: a public function that passes one of its own parameters on
   (``compare_stores(n_bootstrap=n_bootstrap)``) passes it under the same name with the same default.

Then, by name (4): among every ``lam`` option, every ``RunConfig`` field and every parameter of
the library functions those seams reach, one name has one default. ``None`` means "decided
elsewhere" and is not compared; a field named ``x`` whose default is ``v`` agrees with a library
parameter ``xs`` (the plural) whose default is ``(v,)`` (``similarity.metric`` is the first of
``run_similarity``'s ``metrics``). Defaults are compared as plain values (a ``Path`` as its text,
a list as a tuple, a ``torch.dtype`` as its name). A parameter the command or function reassigns
before passing it on is not "passed as it came" and is skipped.

The constants themselves are written once, in :mod:`phonalign.defaults` and
:mod:`analysis.defaults`; the last tests check that the library's, the config's and the command
line's choices are those constants.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import textwrap
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from typer.main import get_command

from lam_train.cli import app
from lam_train.config import RunConfig

PACKAGES = ("phonalign", "analysis", "lam_train")
#: Modules of the packages that are not library code: the command line (checked as seam 1) and
#: the test helpers.
NOT_LIBRARY = ("lam_train.commands", "lam_train.cli", "analysis.testing")
_EMPTY = inspect.Parameter.empty


# ------------------------------------------------------------------------------------------ helpers
def _plain(value: Any) -> Any:
    """A default as a comparable plain value."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if type(value).__module__ == "torch" and type(value).__name__ == "dtype":
        return str(value).removeprefix("torch.")
    return value


def _ours(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").split(".")[0] in PACKAGES and not any(
        (obj.__module__ or "").startswith(m) for m in NOT_LIBRARY)


#: Class names that hold settings; other dataclasses are records (a ``FrameSpec``, a ``PhoneInfo``):
#: their fields are data, not settings, and constructing one passes values, not defaults.
SETTINGS_CLASSES = ("Config", "Options", "Settings")


def _is_setting_callee(obj: Any) -> bool:
    """Functions, and classes that hold settings (not records, not exceptions)."""
    if inspect.isclass(obj):
        if issubclass(obj, BaseException):
            return False
        if dataclasses.is_dataclass(obj) and not obj.__name__.endswith(SETTINGS_CLASSES):
            return False
    return True


def _signature(obj: Any) -> inspect.Signature | None:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def _library_modules() -> Iterator[ModuleType]:
    for pkg in PACKAGES:
        root = importlib.import_module(pkg)
        for info in pkgutil.walk_packages(root.__path__, pkg + "."):
            if not info.name.startswith(NOT_LIBRARY):
                yield importlib.import_module(info.name)


def _bindings(module: ModuleType, func: ast.AST) -> dict[str, Any]:
    """Names visible inside ``func``: the module's globals and the imports made in the function."""
    names = dict(vars(module))
    for node in ast.walk(func):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            base = node.module
            if node.level:
                base = ".".join(module.__name__.split(".")[: -node.level] + [node.module])
            source = importlib.import_module(base)
            for alias in node.names:
                names[alias.asname or alias.name] = getattr(source, alias.name, None)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = importlib.import_module(alias.name.split(".")[0])
    return names


def _callee(node: ast.Call, names: dict[str, Any]) -> Any:
    """The object a call names (``f(...)`` or ``module.f(...)``), or None."""
    if isinstance(node.func, ast.Name):
        return names.get(node.func.id)
    if isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
        base = names.get(node.func.value.id)
        if isinstance(base, ModuleType):
            return getattr(base, node.func.attr, None)
    return None


def _reassigned(func: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(func):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
        for t in targets:
            out |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return out


@dataclasses.dataclass(frozen=True)
class Passing:
    """One setting handed over at a seam: ``where`` passes ``given`` (default ``given_default``) as
    ``callee``'s keyword ``keyword`` (default ``callee_default``)."""

    where: str
    given: str
    given_default: Any
    callee: str
    keyword: str
    callee_default: Any


def _library_calls(module: ModuleType, func: ast.AST) -> Iterator[tuple[ast.Call, Any, inspect.Signature]]:
    names = _bindings(module, func)
    for node in ast.walk(func):
        if isinstance(node, ast.Call):
            obj = _callee(node, names)
            sig = _signature(obj) if obj is not None and _ours(obj) and _is_setting_callee(obj) else None
            if sig is not None:
                yield node, obj, sig


def _callee_default(sig: inspect.Signature, keyword: str) -> Any:
    p = sig.parameters.get(keyword)
    return _EMPTY if p is None else p.default


# ------------------------------------------------------------------------------ seam 1: command line
def _cli_defaults() -> dict[str, dict[str, Any]]:
    """verb -> {parameter: the value the command function receives when the option is not given}."""
    out = {}
    for name, cmd in get_command(app).commands.items():
        args: list[str] = []
        for p in cmd.params:
            if p.required:
                args += ["x"] if p.param_type_name == "argument" else [p.opts[0], "x"]
        ctx = cmd.make_context(name, args)
        # a repeatable option given nothing passes an empty tuple: "not given", like None
        out[name] = {p.name: None if p.multiple and ctx.params[p.name] == () else ctx.params[p.name]
                     for p in cmd.params if not p.required and p.param_type_name == "option"}
    return out


def _cli_passings() -> list[Passing]:
    defaults = _cli_defaults()
    out = []
    for info in app.registered_commands:
        fn = info.callback
        verb = info.name or fn.__name__
        tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
        module = importlib.import_module(fn.__module__)
        options, changed = defaults[verb], _reassigned(tree)
        for call, obj, sig in _library_calls(module, tree):
            for kw in call.keywords:
                if isinstance(kw.value, ast.Name) and kw.value.id in options and kw.value.id not in changed:
                    out.append(Passing(f"lam {verb}", kw.value.id, options[kw.value.id],
                                       f"{obj.__module__}.{obj.__qualname__}", kw.arg or "**",
                                       _callee_default(sig, kw.arg or "")))
    return out


# -------------------------------------------------------------------------------- seam 2: run config
def _sections() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])}


def _field_defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            if not dataclasses.is_dataclass(value):
                out[f.name] = value
    return out


def _section_of(node: ast.AST, aliases: dict[str, str]) -> str | None:
    if isinstance(node, ast.Attribute) and node.attr in _sections():
        return node.attr
    if isinstance(node, ast.Name):
        return aliases.get(node.id)
    return None


def _config_passings() -> list[Passing]:
    sections = _sections()
    out = []
    for module in _library_modules():
        if not module.__name__.startswith("lam_train"):
            continue
        tree = ast.parse(inspect.getsource(module))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            # local name -> section, from `f = cfg.features` / `t, m = cfg.train, cfg.model`
            aliases: dict[str, str] = {}
            for node in ast.walk(func):
                if isinstance(node, ast.Assign) and len(node.targets) == 1:
                    target, value = node.targets[0], node.value
                    pairs = zip(target.elts, value.elts, strict=False) if isinstance(target, ast.Tuple) and \
                        isinstance(value, ast.Tuple) else [(target, value)]
                    for t, v in pairs:
                        if isinstance(t, ast.Name) and isinstance(v, ast.Attribute) and v.attr in sections:
                            aliases[t.id] = v.attr
            for call, obj, sig in _library_calls(module, func):
                for kw in call.keywords:
                    value = kw.value
                    if not isinstance(value, ast.Attribute):
                        continue
                    section = _section_of(value.value, aliases)
                    fields = _field_defaults(sections[section]) if section else {}
                    if value.attr in fields:
                        out.append(Passing(f"{module.__name__}.{func.name}", f"{section}.{value.attr}",
                                           fields[value.attr], f"{obj.__module__}.{obj.__qualname__}",
                                           kw.arg or "**", _callee_default(sig, kw.arg or "")))
    return out


# ------------------------------------------------------------------------------- seam 3: the library
def _library_passings() -> list[Passing]:
    out = []
    for module in _library_modules():
        tree = ast.parse(inspect.getsource(module))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            if func.name.startswith("_") and func.name != "__init__":
                continue
            own = {a.arg: d for a, d in zip(func.args.args[::-1], func.args.defaults[::-1], strict=False)}
            own |= {a.arg: d for a, d in zip(func.args.kwonlyargs, func.args.kw_defaults, strict=True) if d}
            changed = _reassigned(func)
            for call, obj, sig in _library_calls(module, func):
                for kw in call.keywords:
                    if isinstance(kw.value, ast.Name) and kw.value.id in own and kw.value.id not in changed:
                        given = ast.literal_eval(own[kw.value.id]) if _is_literal(own[kw.value.id]) else \
                            _evaluate(own[kw.value.id], module)
                        out.append(Passing(f"{module.__name__}.{func.name}", kw.value.id, given,
                                           f"{obj.__module__}.{obj.__qualname__}", kw.arg or "**",
                                           _callee_default(sig, kw.arg or "")))
    return out


def _is_literal(node: ast.AST) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True


def _evaluate(node: ast.AST, module: ModuleType) -> Any:
    """A default written as a name (a constant of the module, e.g. ``N_BOOTSTRAP``)."""
    try:
        return eval(compile(ast.Expression(node), "<default>", "eval"), vars(module))  # noqa: S307 - our own source
    except Exception:  # an expression that needs more than the module's globals: not compared
        return None


def _same_name(given: str, keyword: str) -> bool:
    """``keyword`` names the setting ``given`` holds: the same name, or one instance of it qualified
    by its role (``source_language`` / ``target_language`` -> ``language``, ``train_split`` -> ``split``)."""
    return keyword == "**" or given == keyword or given.endswith("_" + keyword)


PASSINGS = {"command line": _cli_passings, "run config": _config_passings, "library": _library_passings}


@pytest.mark.parametrize("seam", list(PASSINGS))
def test_a_setting_keeps_its_name_and_default_across_the_seam(seam):
    passings = PASSINGS[seam]()
    assert len(passings) >= 10, f"the {seam} seam check found only {len(passings)} passings: is it blind?"
    renamed = [p for p in passings if not _same_name(p.given.rpartition(".")[2], p.keyword)]
    assert not renamed, "one setting, two names:\n  " + "\n  ".join(
        f"{p.where} passes {p.given} as {p.callee}({p.keyword}=...)" for p in renamed)
    differ = [p for p in passings if p.given_default is not _EMPTY and p.callee_default is not _EMPTY
              and p.given_default is not None and p.callee_default is not None
              and _plain(p.given_default) != _plain(p.callee_default)]
    assert not differ, "one setting, two defaults:\n  " + "\n  ".join(
        f"{p.where}: {p.given} = {p.given_default!r}, but {p.callee}({p.keyword}=...) defaults to "
        f"{p.callee_default!r}" for p in differ)


# --------------------------------------------------------------------------------- 4: one name, one default
def _reached_signatures() -> dict[str, inspect.Signature]:
    """The library functions the seams reach (callees, and functions that pass settings on)."""
    out = {}
    for module in _library_modules():
        for name, obj in vars(module).items():
            if name.startswith("_") or not _ours(obj) or obj.__module__ != module.__name__:
                continue
            if inspect.isfunction(obj) or (inspect.isclass(obj) and _is_setting_callee(obj)):
                sig = _signature(obj)
                if sig is not None:
                    out[f"{module.__name__}.{obj.__qualname__}"] = sig
    reached = {p.callee for seam in PASSINGS.values() for p in seam()}
    reached |= {p.where for p in _library_passings()}
    return {k: v for k, v in out.items() if k in reached}


#: Where a name means another thing than the setting of that name elsewhere, with the reason; a
#: place not listed here that gives such a name another default fails the test below.
OTHER_SETTING: dict[str, dict[str, str]] = {
    "units": {"analysis.plots": "units *drawn* in a figure: the three summary units Utt, Vowl, Cons, while the "
                                "similarity computes all nine"},
    "seed": {"phonalign.demo_corpus": "the seed the bundled demo corpus was generated with (its audio is "
                                      "shipped; changing it means regenerating the corpus)"},
    "what": {"": "a noun naming the thing in an error message ('file', 'source'), not a setting"},
    "name": {"RunConfig engine.": "the engine's name (local or ray; `lam --engine`), not the run's name"},
}


def test_every_name_has_one_default_across_the_command_line_the_run_config_and_the_library():
    seen: dict[str, list[tuple[str, Any]]] = {}
    for verb, options in _cli_defaults().items():
        for name, value in options.items():
            seen.setdefault(name, []).append((f"lam {verb}", value))
    for section, cls in {"": RunConfig, **_sections()}.items():
        for name, value in _field_defaults(cls).items():
            seen.setdefault(name, []).append((f"RunConfig {section or 'top'}.{name}", value))
    for where, sig in _reached_signatures().items():
        for name, p in sig.parameters.items():
            if p.default is not _EMPTY:
                seen.setdefault(name, []).append((where, p.default))
    # a setting `x` and a parameter `xs` taking several: (x,) is the plural of x
    for name in list(seen):
        for where, value in seen.get(name + "s", []):
            if isinstance(value, (tuple, list)) and len(value) == 1:
                seen[name].append((where, value[0]))
    disagree = {}
    for name, places in seen.items():
        places = [(w, v) for w, v in places if not any(w.startswith(m) for m in OTHER_SETTING.get(name, {}))]
        values = {repr(_plain(v)) for _, v in places if v is not None and v is not _EMPTY}
        if len(values) > 1:
            disagree[name] = places
    assert not disagree, "settings with more than one default:\n" + "\n".join(
        f"  {name}: " + "; ".join(f"{w} = {v!r}" for w, v in places) for name, places in disagree.items())
    assert len(seen) > 40  # the check sees the whole surface, not a handful of names


# ------------------------------------------------------------------------------------------ constants
def test_choices_of_the_command_line_and_the_run_config_are_the_librarys_constants():
    from analysis import defaults as ad
    from analysis.models import _DTYPES
    from analysis.rankings import SELECTION_KEYS
    from analysis.similarity import METRICS, RESAMPLE_MODES, UNITS
    from lam_train.config import STRATEGY_SELECTIONS, config_from_dict

    assert (METRICS, RESAMPLE_MODES, UNITS, SELECTION_KEYS) == (ad.METRICS, ad.RESAMPLE_MODES, ad.UNITS,
                                                                ad.SELECTION_KEYS)
    assert tuple(_DTYPES) == ad.DTYPES and STRATEGY_SELECTIONS == ad.SELECTION_KEYS + ("all",)
    cmd = get_command(app)
    required = {"features": ["x", "x", "--model", "x"], "similarity": ["x", "x", "--out", "x"]}
    for verb, option, valid in (("features", "whisper_mode", ad.WHISPER_MODES), ("features", "dtype", ad.DTYPES),
                                ("features", "device", ("auto", "cpu", "cuda", "cuda:1")),
                                ("similarity", "resample", ad.RESAMPLE_MODES),
                                ("similarity", "metrics", tuple(ad.METRICS))):
        sub = cmd.commands[verb]
        flag = next(p for p in sub.params if p.name == option).opts[0]
        for value in valid:  # every library value is accepted ...
            got = sub.make_context(verb, [*required[verb], flag, value]).params[option]
            assert got in (value, [value], (value,))
        with pytest.raises(Exception, match="no-such-value"):  # ... and nothing else
            sub.make_context(verb, [*required[verb], flag, "no-such-value"])
    # the run config refuses what the library refuses, naming the key
    for key, value in (("whisper_mode", "half"), ("dtype", "int8"), ("device", "gpu")):
        with pytest.raises(Exception, match=f"features.{key}"):
            config_from_dict({"features": {key: value}})
    with pytest.raises(Exception, match="similarity.resample"):
        config_from_dict({"similarity": {"resample": "speakers"}})


def test_the_demo_corpus_has_one_name_and_the_retired_one_says_so(tmp_path):
    from typer.testing import CliRunner

    from lam_train.config import config_from_dict
    from phonalign.corpus import demo_corpus_dir, locate_corpus, read_corpus
    from phonalign.defaults import DEMO_CORPUS
    from phonalign.errors import CorpusError

    assert locate_corpus(DEMO_CORPUS) == (demo_corpus_dir(), DEMO_CORPUS)
    assert len(read_corpus(DEMO_CORPUS)) == len(read_corpus(None, preset=DEMO_CORPUS)) > 0
    with pytest.raises(CorpusError, match="lam-demo"):
        locate_corpus("@demo")
    with pytest.raises(Exception, match="no longer names the demo corpus") as err:
        config_from_dict({"corpus": {"path": "@demo"}})
    assert "lam-demo" in err.value.hint
    res = CliRunner().invoke(app, ["align", "@demo", str(tmp_path / "out")])
    assert res.exit_code != 0 and "lam-demo" in str(res.exception.hint)
    assert not (tmp_path / "out").exists()
    # renamed config keys name their new name
    with pytest.raises(Exception, match="now called 'similarity.n_bootstrap'"):
        config_from_dict({"similarity": {"n_boot": 10}})
