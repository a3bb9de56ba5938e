"""The shape of ``src/fedids``: layers that only import downwards, modules and functions of readable size,
and an installed package that reads nothing outside itself.

Layers, top to bottom (a module may import its own layer and every layer below it, never one above)::

    cli/ -> pipelines/ -> federation/, evaluation/ -> privacy/, detect/, task.py -> model/ -> data/
         -> the package root (fedids/__init__.py, console.py, errors.py, devices.py)

Packages of one layer are peers and do not import each other either (``federation/`` prices rounds with
the device profiles of ``devices.py``, not with ``evaluation/energy.py``). Every import counts, including those inside functions and under ``if TYPE_CHECKING:``: a hidden import
is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fedids"

LAYERS: dict[str, int] = {
    "cli": 0,
    "pipelines": 1,
    "federation": 2,
    "evaluation": 2,
    "privacy": 3,
    "detect": 3,
    "task": 3,
    "model": 4,
    "data": 5,
    # The package root: version, console, errors, the hardware profiles.
    "": 6,
    "console": 6,
    "errors": 6,
    "devices": 6,
}
ROOT_LAYER = 6
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int | None:
    """The layer of ``fedids.<top>...`` (None for a module outside fedids)."""
    parts = module.split(".")
    if parts[0] != "fedids":
        return None
    top = parts[1] if len(parts) > 1 else ""
    if top not in LAYERS:
        raise AssertionError(f"{module}: no layer assigned; add {top!r} to LAYERS in tests/test_layout.py")
    return LAYERS[top]


def _package(path: Path) -> str:
    return _name(path) if path.name == "__init__.py" else _name(path).rpartition(".")[0]


def _imports(text: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` of every fedids import in the source ``text`` of a module of ``package``,
    wherever it sits (function bodies and ``if TYPE_CHECKING:`` included)."""
    tree = ast.parse(text)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
    return [(line, m) for line, m in found if m == "fedids" or m.startswith("fedids.")]


def test_every_module_has_a_layer() -> None:
    for path in _modules():
        _layer(_name(path))


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_runs_up_a_layer() -> None:
    upward = []
    for path in _modules():
        own = _layer(_name(path))
        assert own is not None
        for line, module in _imports(path.read_text(), _package(path)):
            target = _layer(module)
            if target is not None and target < own:
                upward.append(f"{path.relative_to(SRC.parent)}:{line} imports {module}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_peers_do_not_import_each_other() -> None:
    """federation/ and evaluation/; privacy/, detect/ and task.py: same layer, no imports between them."""
    sideways = []
    for path in _modules():
        own, top = _layer(_name(path)), _top(_name(path))
        for line, module in _imports(path.read_text(), _package(path)):
            if _layer(module) == own != ROOT_LAYER and _top(module) != top:
                sideways.append(f"{path.relative_to(SRC.parent)}:{line} imports {module}")
    assert not sideways, "imports between peers of one layer:\n" + "\n".join(sideways)


def test_modules_are_at_most_600_lines() -> None:
    long = [
        f"{path.relative_to(SRC.parent)}: {n} lines"
        for path in _modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def _function_lengths(path: Path) -> list[tuple[str, int, int]]:
    """``(qualified name, first line, lines)`` of every function, from its ``def`` (decorators excluded) to
    its last line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                found.append((name, child.lineno, (child.end_lineno or child.lineno) - child.lineno + 1))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def test_functions_are_at_most_80_lines() -> None:
    long = [
        f"{path.relative_to(SRC.parent)}:{line} {name}: {n} lines"
        for path in _modules()
        for name, line, n in _function_lengths(path)
        if n > MAX_FUNCTION_LINES
    ]
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


@pytest.mark.parametrize("needle", ["parents[3]", "REPO_ROOT", "/work/", "/home/", "/Users/"])
def test_the_package_reads_nothing_outside_itself(needle: str) -> None:
    """No path climbs out of the installed package (to benchmarks/, deploy/, a shared data folder) and no
    docstring names a path of the development machine."""
    hits = [
        f"{path.relative_to(SRC.parent)}:{i}"
        for path in _modules()
        for i, text in enumerate(path.read_text().splitlines(), 1)
        if needle in text
    ]
    assert not hits, f"{needle!r} in:\n" + "\n".join(hits)


def test_the_checker_sees_imports_inside_functions() -> None:
    """The walker finds imports in function bodies and under TYPE_CHECKING, and resolves relative ones."""
    text = (
        "import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fedids.cli import app\n"
        "def f():\n    from . import gru\n    from ..data.schema import FEATURES\n"
    )
    assert _imports(text, "fedids.model") == [
        (4, "fedids.cli"),
        (6, "fedids.model"),
        (7, "fedids.data.schema"),
    ]
