"""Documented commands, examples and settings cannot go stale.

* README's first lines are the two set-up commands.
* Every ``lam ...`` line in the README's code blocks parses against the real command line (the
  verb exists, every option is in that verb's ``--help``, the number of positional arguments is
  right); the cheap ones (``lam align`` on the demo corpus, ``lam inventory``) really run.
* The configuration reference lists exactly the fields of ``lam_train.config.RunConfig`` with
  their defaults.
* The README's Python example imports only names that exist.
* Relative links of the README and the docs index point to files that exist.
* Every public function, class and method of ``phonalign``, ``analysis`` and ``lam_train`` has a
  docstring.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
import shlex
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lam_train.cli import app
from lam_train.config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETUP_BLOCK = [
    "```bash",
    "make demo   # set up (.venv, CPU torch 2.13.0, espeak-ng) and run `lam demo` on the bundled corpus",
    "make test   # same set-up, then ruff, mypy, the layers contract and the whole test suite",
    "```",
]


def _code_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def _lam_lines() -> list[str]:
    lines = []
    for lang, body in _code_blocks(README.read_text(encoding="utf-8")):
        if lang not in ("bash", "sh", ""):
            continue
        for line in body.splitlines():
            if line.strip().startswith("lam "):
                lines.append(line.strip())
    return lines


def _click_group():
    return typer.main.get_command(app)


def _parse(line: str):
    """Parse one documented command line with click's own parser (no type conversion, no file
    checks); returns the verb, the click command, the options used and the positional arguments.

    typer vendors click, so the classes come from the command objects themselves."""
    argv = shlex.split(line, comments=True)
    assert argv[0] == "lam", line
    group = _click_group()
    verb = argv[1]
    assert verb in group.commands, f"{line!r}: `lam {verb}` is not a command (have {sorted(group.commands)})"
    cmd = group.commands[verb]
    ctx = cmd.context_class(cmd, info_name=verb)
    parser = cmd.make_parser(ctx)
    try:
        values, extra, _ = parser.parse_args(list(argv[2:]))
    except Exception as err:  # click's UsageError family (NoSuchOption, BadOptionUsage, ...)
        pytest.fail(f"{line!r}: {getattr(err, 'format_message', err.__str__)()}")
    used = [a.split("=")[0] for a in argv[2:] if a.startswith("-")]
    given = [p.name for p in cmd.params if p.param_type_name == "argument" and values.get(p.name) is not None]
    return verb, cmd, used, given + list(extra)


def test_readme_starts_with_the_two_setup_commands():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[: len(SETUP_BLOCK)] == SETUP_BLOCK


def test_readme_documents_every_lam_command():
    verbs = {shlex.split(line)[1] for line in _lam_lines()}
    assert verbs == set(_click_group().commands), "document every `lam` verb with an example"


@pytest.mark.parametrize("line", _lam_lines())
def test_documented_command_line_parses_against_the_real_cli(line):
    verb, cmd, used, positional = _parse(line)
    help_text = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"},
                                   terminal_width=250).output
    for opt in used:
        assert opt in help_text, f"{line!r}: {opt} is not in `lam {verb} --help`"
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    required = [p for p in arguments if p.required]
    assert len(required) <= len(positional) <= len(arguments) and all(p.name in positional for p in required), (
        f"{line!r}: {len(positional)} positional argument(s); `lam {verb}` takes "
        f"{', '.join(p.name.upper() for p in arguments) or 'none'}")


def test_the_cheap_documented_commands_run_on_the_demo_corpus(tmp_path, monkeypatch):
    """`lam align lam-demo ...` and `lam inventory ...` exactly as the README writes them."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    ran = []
    for line in _lam_lines():
        argv = shlex.split(line, comments=True)[1:]
        if argv[0] == "align" and argv[1] == "lam-demo" or argv[0] == "inventory":
            res = runner.invoke(app, argv + (["--no-progress"] if argv[0] == "align" else []),
                                catch_exceptions=False)
            assert res.exit_code == 0, f"{line!r}:\n{res.output}"
            ran.append(argv[0])
            if "--json" in argv:
                counts = json.loads(res.output)
                assert set(counts) == {"en", "zh"} and counts["en"]["classes"]["A"] > 0
    assert ran[:1] == ["align"] and "inventory" in ran
    assert (tmp_path / "aligned_demo" / "segments.parquet").is_file()
    assert len(list((tmp_path / "aligned_demo" / "textgrids").glob("*.TextGrid"))) == 240


def test_version_and_help_work():
    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).exit_code == 0
    for verb in _click_group().commands:
        assert runner.invoke(app, [verb, "--help"]).exit_code == 0, verb


# --------------------------------------------------------------------------------- config reference
def _format_default(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(_format_default(v) for v in value) + "]"
    return str(value)


def _config_fields(cls=RunConfig, prefix: str = "") -> dict[str, str]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_config_fields(hints[f.name], prefix + f.name + "."))
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out[prefix + f.name] = _format_default(default)
    return out


def _documented_config() -> dict[str, tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Configuration reference")
    end = text.index("\n## ", start + 1)
    rows = re.findall(r"^\| `([\w.]+)` \| `([^`]*)` \| (.*) \|$", text[start:end], re.M)
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)), "a config key is listed twice"
    return {k: (d, meaning) for k, d, meaning in rows}


def test_config_reference_lists_every_field_with_its_default_and_a_meaning():
    documented = _documented_config()
    fields = _config_fields()
    assert sorted(set(fields) - set(documented)) == [], "config fields missing from the README"
    assert sorted(set(documented) - set(fields)) == [], "README documents fields the config does not have"
    wrong = {k: (documented[k][0], fields[k]) for k in fields if documented[k][0] != fields[k]}
    assert not wrong, f"README defaults (documented, actual): {wrong}"
    assert all(len(m.strip()) > 10 for _, m in documented.values())


def test_documented_config_example_loads(tmp_path):
    """A YAML made of the documented defaults is a valid config equal to the default one."""
    import yaml

    from lam_train.config import config_from_dict

    nested: dict = {}
    for key, (default, _) in _documented_config().items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(default)
    cfg = config_from_dict(nested)
    assert cfg == RunConfig()


# ---------------------------------------------------------------------------------- examples, links
def test_readme_python_example_compiles_and_imports_existing_names():
    blocks = [body for lang, body in _code_blocks(README.read_text(encoding="utf-8")) if lang == "python"]
    assert blocks
    for body in blocks:
        tree = ast.parse(body)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{node.module}.{alias.name} does not exist"


@pytest.mark.parametrize("page", ["README.md", "docs/index.md"])
def test_relative_links_point_to_existing_files(page):
    path = ROOT / page
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))
    missing = [link for link in links if "://" not in link and not (path.parent / link).exists()]
    assert not missing, f"{page}: broken links {missing}"


# ------------------------------------------------------------------------------------- docstrings
def _public_objects():
    for pkg in ("phonalign", "analysis", "lam_train"):
        root = importlib.import_module(pkg)
        names = [pkg] + [m.name for m in pkgutil.walk_packages(root.__path__, pkg + ".")]
        for name in names:
            module = importlib.import_module(name)
            for attr, obj in vars(module).items():
                if attr.startswith("_") or getattr(obj, "__module__", None) != name:
                    continue
                if inspect.isfunction(obj) or inspect.isclass(obj):
                    yield f"{name}.{attr}", obj
                if inspect.isclass(obj):
                    for meth_name, meth in vars(obj).items():
                        if meth_name.startswith("_"):
                            continue
                        if isinstance(meth, property):
                            yield f"{name}.{attr}.{meth_name}", meth
                        elif inspect.isfunction(getattr(meth, "__func__", meth)):
                            # inherited documentation counts (an override of a documented method)
                            yield f"{name}.{attr}.{meth_name}", getattr(obj, meth_name)


def test_every_public_function_class_and_method_has_a_docstring():
    offenders = sorted(name for name, obj in _public_objects() if not (inspect.getdoc(obj) or "").strip())
    assert not offenders, f"{len(offenders)} public names without a docstring:\n  " + "\n  ".join(offenders)
