"""The import graph of tierwise, read from the source with ``ast``: no cycles (imports inside functions and
under ``TYPE_CHECKING`` included), ``evals/`` imports tierwise at module level only, and nothing on the
request path imports ``evals/``."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import tierwise
import tierwise.evals

SRC = Path(tierwise.__file__).resolve().parent
# Besides evals/ itself, the offline commands only: DESIGN.md's dependency rule.
MAY_IMPORT_EVALS = {"tierwise.cli", "tierwise.train", "tierwise.train_utility"}


@dataclass(frozen=True, slots=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool


def _module_name(path: Path) -> str:
    parts = ("tierwise", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in SRC.rglob("*.py")}


def _edges(name: str, path: Path) -> list[Edge]:
    """Every import of a tierwise module in one file; ``from pkg import mod`` counts as an import of
    ``pkg.mod`` when that is a module, else of ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: list[Edge] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                targets = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    parts = package.split(".")
                    base = ".".join([*parts[: len(parts) - child.level + 1], child.module or ""]).rstrip(".")
                else:
                    base = child.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in child.names]
            else:
                targets = []
            for target in targets:
                if target.partition(".")[0] == "tierwise" and target != name:
                    edges.append(Edge(name, target, child.lineno, inside))
            visit(child, inside)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return edges


EDGES = [edge for name, path in sorted(MODULES.items()) for edge in _edges(name, path)]


def _cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_graph_reads_the_source() -> None:
    """Guards the guards: the walk finds module-level, relative and in-function imports."""
    run = {(e.target, e.in_function) for e in EDGES if e.source == "tierwise.evals.run"}
    assert ("tierwise.evals.metrics", False) in run  # from . import metrics
    assert ("tierwise._version", False) in run  # from .._version import __version__
    assert any(e.source == "tierwise.cli" and e.in_function for e in EDGES)
    assert _cycles([Edge("a", "b", 1, False), Edge("b", "c", 1, True), Edge("c", "a", 1, False)]) == [
        ["a", "b", "c"]
    ]


def test_no_import_cycles() -> None:
    assert _cycles(EDGES) == []


def test_evals_imports_tierwise_at_module_level_only() -> None:
    lazy = [e for e in EDGES if e.source.startswith("tierwise.evals") and e.in_function]
    assert lazy == []


def test_evals_modules_import_only_those_listed_before_them() -> None:
    """The order drawn in ``evals/__init__.py`` is the import order: the docstring cannot drift."""
    rows = [
        line.strip().split("  ")[0]
        for line in (tierwise.evals.__doc__ or "").splitlines()
        if line[:4] == "    "
    ]
    order = [f"tierwise.evals.{name}" for row in rows for name in row.split(" · ")]
    listed = {name for name in MODULES if name.startswith("tierwise.evals.")}
    assert sorted(order) == sorted(listed)
    rank = {name: i for i, name in enumerate(order)}
    upward = [e for e in EDGES if e.source in rank and e.target in rank and rank[e.target] >= rank[e.source]]
    assert upward == []


def test_nothing_on_the_request_path_imports_evals() -> None:
    importers = {
        e.source
        for e in EDGES
        if e.target.startswith("tierwise.evals") and not e.source.startswith("tierwise.evals")
    }
    assert importers <= MAY_IMPORT_EVALS
