"""The package's layering (README "Architecture", ``.importlinter``): no import cycles, no imports
hidden inside functions, and the import-linter contracts hold."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import shmswap
import workers

ROOT = Path(__file__).resolve().parent.parent      # the repository (the package may be installed elsewhere)
PACKAGES = ("shmswap", "workers")
SOURCE_DIRS = [Path(shmswap.__file__).resolve().parent, Path(workers.__file__).resolve().parent]
CONTRACTS = ROOT / ".importlinter"

# Optional heavy dependencies that may be imported lazily, inside a function (none is used yet).
LAZY_IMPORT_ALLOWLIST = frozenset({"matplotlib", "dask", "distributed", "pandas"})


def _strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (the graph's depth must not meet the recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.append(w)
                    if w == node:
                        break
                sccs.append(sorted(scc))
    return sccs


def test_scc_helper_finds_cycles():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}}
    sccs = sorted(_strongly_connected_components(g))
    assert sccs == [["a", "b", "c"], ["d"], ["e"]]


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES)
    modules = {m for m in graph.modules if m.split(".")[0] in PACKAGES}
    assert "shmswap.model" in modules and "workers.cpu" in modules and "shmswap.mm.system" in modules
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d in modules} for m in modules}
    cycles = [scc for scc in _strongly_connected_components(edges) if len(scc) > 1]
    assert cycles == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def _python_files() -> list[Path]:
    files = sorted(p for d in SOURCE_DIRS for p in d.rglob("*.py"))
    assert files
    return files


def _imports_inside_functions(tree: ast.AST) -> list[tuple[int, str, str]]:
    """(line, function, imported module) of every import statement inside a function or method."""
    found = []

    def visit(node: ast.AST, func: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                visit(child, getattr(child, "name", "<lambda>"))
                continue
            if func is not None and isinstance(child, ast.Import):
                found.extend((child.lineno, func, alias.name) for alias in child.names)
            elif func is not None and isinstance(child, ast.ImportFrom):
                found.append((child.lineno, func, "." * child.level + (child.module or "")))
            visit(child, func)

    visit(tree, None)
    return found


def test_import_scanner_sees_nested_imports():
    src = ("import os\n"
           "def f():\n    import json\n    if True:\n        from . import x\n"
           "class C:\n    def m(self):\n        def g():\n            import pandas.io\n")
    assert _imports_inside_functions(ast.parse(src)) == [(3, "f", "json"), (5, "f", "."), (9, "g", "pandas.io")]


def test_no_imports_inside_functions():
    bad = []
    for path in _python_files():
        tree = ast.parse(path.read_text(), str(path))
        for line, func, module in _imports_inside_functions(tree):
            if module.split(".")[0] not in LAZY_IMPORT_ALLOWLIST:
                bad.append(f"{path}:{line}: import of {module or '.'} inside {func}()")
    assert bad == [], "\n".join(bad)


def _lint_imports() -> str | None:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    return exe


def test_import_linter_contracts_hold():
    if not CONTRACTS.exists():
        pytest.skip(f"{CONTRACTS.name} is not written yet")
    exe = _lint_imports()
    assert exe, "lint-imports not found: pip install '.[test]' (import-linter)"
    p = subprocess.run([exe, "--no-cache", str(CONTRACTS)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "broken" in p.stdout and " 0 broken" in p.stdout, p.stdout
