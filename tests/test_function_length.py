"""No function of the three packages is longer than 100 lines (from ``def`` to its last line,
docstring included): a longer one holds several steps that want names of their own.

Functions still over the limit are listed in :data:`REMAINING`, each by name: issue 14 splits
them, and each leaves the list when it is split. The list must stay exact: a function over the
limit that is not listed fails, and so does a listed one that is no longer over it (remove it
from the list then), so the list only shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("phonalign", "analysis", "lam_train")
MAX_LINES = 100

#: "module:qualified name" of each function still over MAX_LINES (none: issue 14 split the last ones).
REMAINING: set[str] = set()


def _functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method with its qualified name (``Class.method``, ``outer.inner``)."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from _functions(node, prefix + node.name + ".")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, prefix + node.name + ".")
        else:
            yield from _functions(node, prefix)


def function_lengths(root: Path = ROOT) -> dict[str, int]:
    """"module:qualname" -> lines from ``def`` to the function's last line, for the three packages."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
                out[f"{module}:{name}"] = (node.end_lineno or node.lineno) - node.lineno + 1
    return out


@pytest.fixture(scope="module")
def lengths() -> dict[str, int]:
    found = function_lengths()
    assert len(found) > 1000  # it reads the packages, not an empty folder
    return found


def test_no_function_is_longer_than_100_lines(lengths):
    long = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in REMAINING}
    assert not long, "functions over 100 lines (split them into named steps):\n  " + "\n  ".join(
        f"{name}: {n} lines" for name, n in sorted(long.items()))


def test_the_list_of_remaining_long_functions_only_shrinks(lengths):
    stale = sorted(name for name in REMAINING if lengths.get(name, 0) <= MAX_LINES)
    assert not stale, "no longer over 100 lines (or gone): remove from REMAINING:\n  " + "\n  ".join(stale)


def test_the_check_counts_from_def_to_the_last_line_with_nested_functions_by_name(tmp_path):
    pkg = tmp_path / "phonalign"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(99))
    (pkg / "m.py").write_text(f"class C:\n    def short(self):\n        pass\n\n\ndef outer():\n{body}\n"
                              f"    def inner():\n        return 1\n    return inner\n", encoding="utf-8")
    found = function_lengths(tmp_path)
    assert found == {"phonalign.m:C.short": 2, "phonalign.m:outer": 103, "phonalign.m:outer.inner": 2}
