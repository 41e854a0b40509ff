"""The layout of runner/ is its architecture: packages by role, no import circles, no mixins.

Imports are read from the source (module level and inside functions alike), so a lazy import that
closes a circle is caught as well as a top-level one. A line count is not checked: it can be met by
spreading one object over mixins, which is the shape these checks forbid (a class of many bases, state
reached through getattr(self, ...)).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "runner"
PACKAGES = {"roadmap", "manager", "agents", "coding", "cli"}
TOP_LEVEL = {"__init__.py", "__main__.py", "model.py", "errors.py"}
MAX_BASES = 2  # a class and one base, or two: more is an object spread over files

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


def _classes_with_many_bases(tree: ast.AST) -> list[tuple[str, int, int]]:
    return [(node.name, node.lineno, len(node.bases)) for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and len(node.bases) > MAX_BASES]


def _state_through_self(tree: ast.AST) -> list[int]:
    """Lines that reach an object's state by name: getattr/hasattr/setattr(self, ...), self.__dict__."""
    lines = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
                and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id == "self"):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Attribute) and node.attr == "__dict__"
              and isinstance(node.value, ast.Name) and node.value.id == "self"):
            lines.append(node.lineno)
    return lines


def test_no_class_mixes_more_than_two_bases():
    bad = []
    for path in ROOT.rglob("*.py"):
        for name, line, n in _classes_with_many_bases(ast.parse(path.read_text(encoding="utf-8"))):
            bad.append(f"{path.relative_to(ROOT)}:{line}: class {name} has {n} bases")
    assert bad == []


def test_no_state_through_getattr_self_in_the_manager():
    bad = []
    for path in (ROOT / "manager").rglob("*.py"):
        bad += [f"{path.relative_to(ROOT)}:{line}" for line in _state_through_self(ast.parse(path.read_text(encoding="utf-8")))]
    assert bad == []


def test_the_shape_checks_catch_what_they_are_for():
    planted = ast.parse(
        "class Run(A, B, C):\n"
        "    def f(self):\n"
        "        return getattr(self, '_x', None) or self.__dict__.setdefault('y', 1)\n"
    )
    assert _classes_with_many_bases(planted) == [("Run", 1, 3)]
    assert _state_through_self(planted) == [3, 3]
    fine = ast.parse("class Run(Component):\n    def f(self):\n        return getattr(self.ctx.backend, 'stopped', None)\n")
    assert _classes_with_many_bases(fine) == [] and _state_through_self(fine) == []


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


def _unused_lazy_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, name) of each import inside a function whose name the function never reads."""
    out = []
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            read = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    out += [(node.lineno, a.asname or a.name.split(".")[0]) for a in node.names
                            if (a.asname or a.name.split(".")[0]) not in read]
    return out


def test_every_import_inside_a_function_is_used():
    """A lazy import is there to put off a cost until a path needs it: one that nothing reads pays the cost
    for nothing (the roadmap loader imported the coding layer's executors on reading `executor:`, unused)."""
    bad = []
    for path in ROOT.rglob("*.py"):
        bad += [f"{path.relative_to(ROOT)}:{line}: {name}" for line, name in _unused_lazy_imports(ast.parse(path.read_text(encoding="utf-8")))]
    assert bad == []
    planted = ast.parse("def f():\n    from runner.coding import executors\n    import os.path\n    return os.sep\n")
    assert _unused_lazy_imports(planted) == [(2, "executors")]
