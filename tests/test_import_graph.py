"""No import cycles in `evolution_store/` or `instrumentation/` (issue 17), counting imports
inside functions: a cycle dodged with a late import is still a cycle for the reader.

The graph is drawn from the source with `ast`, not by importing: one node per module (a
package is its `__init__`), one edge per import of another module of the two packages.
Relative imports are resolved; `from . import x` points at the submodule `x` when there is
one, else at the package; `from .pkg import name` points at `pkg`. Imports under
`if TYPE_CHECKING:` never run, so they do not count. Implicit imports of parent packages
(importing `a.b` runs `a/__init__.py`) are not edges: every submodule would otherwise sit in
a cycle with a package that re-exports it.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("evolution_store", "instrumentation")

Graph = dict[str, set[str]]


def module_files(root: Path, packages: Iterable[str]) -> dict[str, tuple[Path, bool]]:
    """module name -> (its file, whether it is a package's `__init__`)."""
    found: dict[str, tuple[Path, bool]] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            found[".".join(parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, at any depth (functions, methods, try blocks),
    skipping the bodies of `if TYPE_CHECKING:` (their `else` still runs)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _known(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """`name`, or the longest prefix of it that is one of `modules`."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(
    node: ast.Import | ast.ImportFrom,
    module: str,
    is_package: bool,
    modules: dict[str, tuple[Path, bool]],
) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            target = _known(alias.name, modules)
            if target:
                yield target
        return
    if node.level:
        # The package a relative import starts from: the module itself for an `__init__`.
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        if node.module:
            base += node.module.split(".")
        origin = ".".join(base)
    else:
        origin = node.module or ""
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        target = submodule if submodule in modules else _known(origin, modules)
        if target:
            yield target


def import_graph(root: Path, packages: Iterable[str]) -> Graph:
    """module -> the modules of `packages` it imports (see the module docstring)."""
    modules = module_files(root, packages)
    graph: Graph = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _import_nodes(tree):
            graph[name].update(_targets(node, name, is_package, modules))
        graph[name].discard(name)  # `from . import x` inside a package's own `__init__`
    return graph


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def _shortest_path(graph: Graph, start: str, goal: str, within: set[str]) -> list[str]:
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = []
            step: str | None = node
            while step is not None:
                path.append(step)
                step = previous[step]
            return path[::-1]
        for child in sorted(graph[node] & within):
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"no path from {start} to {goal}")  # impossible inside a component


def find_cycles(graph: Graph) -> list[list[str]]:
    """A cycle through every import edge that lies on one, each as `[a, b, ..., a]`, without
    repeats (a cycle is listed once whichever module it is read from)."""
    cycles: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        for source in component:
            for target in sorted(graph[source] & members):
                cycle = [source, *_shortest_path(graph, target, source, members)]
                ring = cycle[:-1]
                turn = ring.index(min(ring))
                key = tuple(ring[turn:] + ring[:turn])
                if key not in seen:
                    seen.add(key)
                    cycles.append([*key, key[0]])
    return cycles


# -- the real packages --------------------------------------------------------------------------


def test_the_packages_have_no_import_cycles() -> None:
    cycles = find_cycles(import_graph(ROOT, PACKAGES))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_graph_is_drawn_from_the_code() -> None:
    # Guards against a walker that finds nothing and so finds no cycle.
    graph = import_graph(ROOT, PACKAGES)
    assert {"evolution_store.store", "instrumentation._config"} <= graph.keys()
    assert sum(len(targets) for targets in graph.values()) > 50
    assert "evolution_store.group_commit" in graph["evolution_store.store"]
    assert "evolution_store.span_writes" in graph["evolution_store.store"]
    # `from . import aggregates, queries, task_writes`: the submodules, not the package
    assert "evolution_store.task_writes" in graph["evolution_store.store"]
    # imported inside `backend_for` only
    assert "evolution_store.backends.sqlite" in graph["evolution_store.backends"]
    assert any(targets for name, targets in graph.items() if name.startswith("instrumentation"))


# -- the walker itself, on a package written for it ---------------------------------------------


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_cycle_through_a_function_level_import_is_found(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from .a import thing\n",
            "pkg/a.py": "from . import b\nthing = 1\n",
            "pkg/b.py": "def late():\n    from .a import thing\n    return thing\n",
            "pkg/c.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .d import X\n"
                "else:\n    from .sub import leaf\n"
            ),
            "pkg/d.py": "import pkg.c\n",
            "pkg/sub/__init__.py": "from .. import helpers\nfrom .leaf import value\n",
            "pkg/sub/leaf.py": "value = 1\n",
            "pkg/helpers.py": "import json\nfrom pkg.sub import value\n",
            "other/__init__.py": "",
            "other/e.py": "from pkg.b import late\n",
        },
    )
    graph = import_graph(tmp_path, ["pkg", "other"])
    assert graph["pkg"] == {"pkg.a"}
    assert graph["pkg.a"] == {"pkg.b"}  # `from . import b`: the submodule
    assert graph["pkg.b"] == {"pkg.a"}  # inside a function, still an edge
    assert graph["pkg.c"] == {"pkg.sub.leaf"}  # TYPE_CHECKING skipped, its `else` kept
    assert graph["pkg.d"] == {"pkg.c"}
    # `from .. import helpers` (a module) and `from pkg.sub import value` (a name in the
    # package's `__init__`) make a cycle between a package and a module
    assert graph["pkg.sub"] == {"pkg.helpers", "pkg.sub.leaf"}
    assert graph["pkg.helpers"] == {"pkg.sub"}
    assert graph["other.e"] == {"pkg.b"}  # across the packages walked
    assert find_cycles(graph) == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.helpers", "pkg.sub", "pkg.helpers"],
    ]


def test_every_edge_on_a_cycle_is_named() -> None:
    graph: Graph = {
        "a": {"b", "c"},
        "b": {"a"},
        "c": {"a"},
        "d": {"d"},
        "e": {"a"},
    }
    assert find_cycles(graph) == [["a", "b", "a"], ["a", "c", "a"], ["d", "d"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
