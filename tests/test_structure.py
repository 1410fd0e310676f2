"""The package's import graph (issue 26): no cycle among asmnet's modules, counting the imports
inside functions too, and the network code (``asmnet.nn``) never imports training code.

The graph is read from the source with ``ast``, so it holds every import a module can make,
whichever of its functions run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "asmnet"

def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name; a package's ``__init__`` is the package itself."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("asmnet",) + path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its source (relative imports
    resolved; ``from pkg import x`` counts as ``pkg.x`` when that is a module, else ``pkg``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import asmnet.x.y` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each strongly connected group of more than one module (sorted): each is
    in a cycle with every other of its group."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def closed_path(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A path inside ``group`` from its first module back to it (breadth first: a shortest one)."""
    start = min(group)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                return paths[node] + [start]
            if nxt not in paths:
                paths[nxt] = paths[node] + [nxt]
                queue.append(nxt)
    return sorted(group)


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "asmnet.api" in graph["asmnet.video"]  # module level, relative
    assert "asmnet.formats.image" in graph["asmnet.api"]
    assert "asmnet.formats" in graph  # a package is its own node


def test_no_import_cycle():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(
        f"{' -> '.join(closed_path(graph, set(group)))} (the group: {', '.join(group)})" for group in found)


def test_network_code_imports_no_training_code():
    graph = import_graph()
    leaks = {name: sorted(t for t in targets if t == "asmnet.training" or t.startswith("asmnet.training."))
             for name, targets in graph.items() if name == "asmnet.nn" or name.startswith("asmnet.nn.")}
    assert not any(leaks.values()), {name: t for name, t in leaks.items() if t}
