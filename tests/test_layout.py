"""The layout of runner/ is its architecture: packages by role, small modules, no import circles.

Imports are read from the source (module level and inside functions alike), so a lazy import that
closes a circle is caught as well as a top-level one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "runner"
PACKAGES = {"roadmap", "manager", "agents", "coding", "cli"}
TOP_LEVEL = {"__init__.py", "__main__.py", "model.py", "errors.py"}
MAX_LINES = 520  # "no module over ~500 lines"

# package -> packages it must never import (DESIGN.md, and each package's docstring)
FORBIDDEN = {
    "roadmap": {"manager", "agents", "cli"},
    "agents": {"manager", "roadmap", "cli"},
    "coding": {"manager", "agents", "cli"},
    "manager": {"cli"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            if n in known and n != name:
                out.add(n)
    # a package's __init__ is imported on the way to any of its modules: it is not an edge
    return {n for n in out if not (name.startswith(n + ".") and (ROOT.parent / n.replace(".", "/") / "__init__.py").exists())}


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def test_top_level_holds_only_the_packages_and_the_two_shared_modules():
    files = {p.name for p in ROOT.iterdir() if p.is_file() and p.suffix == ".py"}
    dirs = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert files <= TOP_LEVEL, files - TOP_LEVEL
    assert dirs == PACKAGES


def test_every_package_says_its_role_and_its_imports():
    for pkg in PACKAGES:
        doc = ast.get_docstring(ast.parse((ROOT / pkg / "__init__.py").read_text(encoding="utf-8")))
        assert doc and "May import" in doc and "Imported by" in doc, pkg


@pytest.mark.parametrize("path", sorted(ROOT.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_long(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most ~500)"


def test_no_import_circle():
    graph = _graph()
    # Tarjan's strongly connected components: any component of two or more modules is a circle
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert circles == []


def test_packages_import_only_what_their_role_allows():
    bad = []
    for name, deps in _graph().items():
        parts = name.split(".")
        if len(parts) < 2 or parts[1] not in FORBIDDEN:
            continue
        for dep in deps:
            dparts = dep.split(".")
            if len(dparts) > 1 and dparts[1] in FORBIDDEN[parts[1]]:
                bad.append(f"{name} imports {dep}")
    assert bad == []


def test_nothing_below_cli_prints():
    bad = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                bad.append(f"{rel}:{node.lineno}")
    assert bad == []
