"""The source tree's layout: an import graph without circles, no module over MAX_LINES lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "pipacs"
MAX_LINES = 500


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below `root` (a package named as its folder)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module `name` stands for: itself, else the nearest package or module above it."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports, at module level or inside functions.

    `from . import x` counts as importing the submodule x when there is one, else the package.
    """
    known = module_names(root)
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets.update(_resolve(a.name, known) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, node.module] if node.module else parts)
                if not node.level:
                    base = node.module or ""
                for alias in node.names:
                    targets.add(_resolve(f"{base}.{alias.name}", known))
        graph[name] = {t for t in targets if t and t != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The circles (a -> ... -> a) of the graph: for each group of modules that import each
    other, the shortest circle through each of its modules, each circle once."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set(stack[stack.index(node) :])
            del stack[stack.index(node) :]
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found: dict[tuple[str, ...], list[str]] = {}
    for group in groups:
        for start in sorted(group):
            circle = _shortest_circle(start, group, graph)
            first = circle.index(min(circle))
            key = tuple(circle[first:] + circle[:first])
            found[key] = [*key, key[0]]
    return sorted(found.values(), key=lambda c: (len(c), c))


def _shortest_circle(start: str, group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """The modules of the shortest circle from `start` back to it, inside its group."""
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return paths[node]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    raise AssertionError(f"{start} is in no circle of {sorted(group)}")  # a group always is


def test_the_import_graph_has_no_circle() -> None:
    found = circles(import_graph(SOURCE))
    if found:
        pytest.fail(
            "modules that import each other (a -> b: a imports b):\n"
            + "\n".join(" -> ".join(c) for c in found),
            pytrace=False,
        )


def test_no_module_is_longer_than_max_lines() -> None:
    long = {
        path.relative_to(SOURCE.parent).as_posix(): n
        for path in sorted(SOURCE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    if long:
        pytest.fail(
            f"modules over {MAX_LINES} lines: "
            + ", ".join(f"{p} ({n})" for p, n in sorted(long.items(), key=lambda kv: -kv[1])),
            pytrace=False,
        )


def test_the_graph_sees_deferred_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: a circle hidden in a function, through `from . import x`, is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import VALUE\n")
    (pkg / "sub" / "leaf.py").write_text("VALUE = 1\n")
    (pkg / "sub" / "deep.py").write_text(
        "def late():\n    from .. import a\n    from ..b import f\n"
    )
    (pkg / "a.py").write_text("from .sub import leaf\nfrom . import b\n")
    (pkg / "b.py").write_text("import pkg\n\ndef f():\n    from pkg.sub import deep\n")
    (pkg / "c.py").write_text("import pkg.sub.leaf\nfrom .sub import VALUE\n")
    graph = import_graph(pkg)
    assert graph["pkg.a"] == {"pkg.sub.leaf", "pkg.b"}
    assert graph["pkg.b"] == {"pkg", "pkg.sub.deep"}
    assert graph["pkg.c"] == {"pkg.sub.leaf", "pkg.sub"}
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.deep"] == {"pkg.a", "pkg.b"}
    assert circles(graph) == [
        ["pkg.b", "pkg.sub.deep", "pkg.b"],
        ["pkg.a", "pkg.b", "pkg.sub.deep", "pkg.a"],
    ]
    assert circles({**graph, "pkg.b": {"pkg"}}) == []
