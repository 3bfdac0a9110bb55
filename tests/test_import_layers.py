"""The import graph of crbench and crbench_methods: no circles, and imports only go down the
layers of README "Architecture".

Every ``import`` / ``from ... import`` of a crbench or crbench_methods module counts: at module
level, inside functions (lazy imports) and under ``if TYPE_CHECKING:`` (type-only imports),
because a lazy import one way and a type-only import the other is still a circle between two
modules (how runner.py / runner_eval.py used to be tied). Imports are read from the source with
``ast``; nothing is imported.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"crbench": REPO / "crbench", "crbench_methods": REPO / "methods"}

LAYERS: tuple[tuple[str, ...], ...] = (
    ("crbench", "crbench.errors", "crbench.constants"),
    ("crbench.api", "crbench.torchutil", "crbench.distributed"),
    ("crbench.data", "crbench.metrics"),
    ("crbench.synth", "crbench.registry", "crbench.training"),
    ("crbench.runner", "crbench_methods"),
    ("crbench.report",),
    ("crbench.check",),
    ("crbench.demo",),
    ("crbench.cli",),
)
"""Units (a module or a package with everything below it; ``crbench`` is the package's own
``__init__``, i.e. ``__version__``) from the bottom layer (1 in README "Architecture") up. A
module may import its own unit and units of lower layers, never a unit of its own layer or of
a higher one."""

ALLOWED_TYPE_ONLY: dict[tuple[str, str], str] = {
    ("crbench_methods.seqdm.train", "crbench_methods.seqdm"):
        "SeqDM annotations in the training code that SeqDM.fit imports lazily",
}
"""Type-only imports (under ``if TYPE_CHECKING:``) left out of the circle check, each with the
reason. Nothing else is exempt, and an exempt import must stay type-only."""


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``where`` (file:line), in context ``kind``."""

    source: str
    target: str
    where: str
    kind: str  # "module level", "in a function" or "TYPE_CHECKING"

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.kind}, {self.where})"


def module_files() -> dict[str, Path]:
    """Module name -> file, for every .py file of both packages."""
    found = {}
    for package, root in PACKAGES.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Imports(ast.NodeVisitor):
    """Collects (imported name, line, kind) of one module, resolving relative imports."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.kind = "module level"
        self.found: list[tuple[str, int, str]] = []

    def _visit_in(self, node: ast.AST, kind: str) -> None:
        outer, self.kind = self.kind, kind if self.kind == "module level" else self.kind
        self.generic_visit(node)
        self.kind = outer

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._visit_in(node, "in a function")

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        outer, self.kind = self.kind, "TYPE_CHECKING"
        for child in node.body:
            self.visit(child)
        self.kind = outer
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name, node.lineno, self.kind))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[:len(base) - node.level + 1]
            base_name = ".".join([*base, *([node.module] if node.module else [])])
        else:
            base_name = node.module or ""
        for alias in node.names:
            sub = f"{base_name}.{alias.name}"
            self.found.append((sub if sub in self.known else base_name, node.lineno, self.kind))


def _owner(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies in (None outside both packages)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        candidate = ".".join(parts[:n])
        if candidate in known:
            return candidate
    return None


def extension_modules() -> set[str]:
    """Compiled modules, named after their C source beside the Python files (setup.py builds
    ``crbench/metrics/_kernel.c`` as ``crbench.metrics._kernel``); they import nothing."""
    return {".".join([package, *path.relative_to(root).with_suffix("").parts])
            for package, root in PACKAGES.items() for path in root.rglob("*.c")}


def import_edges() -> list[Edge]:
    files = module_files()
    known = set(files) | extension_modules()
    edges = []
    for module, path in files.items():
        visitor = _Imports(module, path.name == "__init__.py", known)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        for name, line, kind in visitor.found:
            target = _owner(name, known)
            if target is not None and target != module:
                where = f"{path.relative_to(REPO)}:{line}"
                edges.append(Edge(module, target, where, kind))
    return edges


def find_cycles(edges: list[Edge]) -> list[list[Edge]]:
    """One circle (as its edges, in order) per strongly connected group of modules."""
    graph: dict[str, dict[str, Edge]] = {}
    for e in edges:
        graph.setdefault(e.source, {}).setdefault(e.target, e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, {}):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return [_circle_in(group, graph) for group in groups]


def _circle_in(group: set[str], graph: dict[str, dict[str, Edge]]) -> list[Edge]:
    """A shortest circle through the group's first module (breadth-first search)."""
    start = min(group)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w, e in sorted(graph.get(v, {}).items()):
                if w == start:
                    return [*paths[v], e]
                if w in group and w not in paths:
                    paths[w] = [*paths[v], e]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle found in the strongly connected group {sorted(group)}")


def _unit(module: str) -> tuple[int, str] | None:
    best = None
    for layer, units in enumerate(LAYERS):
        for unit in units:
            inside = module == unit or (unit != "crbench" and module.startswith(unit + "."))
            if inside and (best is None or len(unit) > len(best[1])):
                best = (layer, unit)
    return best


def test_the_graph_is_read() -> None:
    edges = import_edges()
    assert len(module_files()) > 50
    pairs = {(e.source, e.target) for e in edges}
    assert ("crbench.runner.execute", "crbench.runner.evaluate") in pairs
    assert ("crbench.report.build", "crbench.report.figures") in pairs
    assert ("crbench_methods.seq2point", "crbench.training") in pairs


def test_no_import_circles() -> None:
    edges = import_edges()
    for (source, target), why in ALLOWED_TYPE_ONLY.items():
        kinds = {e.kind for e in edges if (e.source, e.target) == (source, target)}
        assert kinds == {"TYPE_CHECKING"}, (
            f"the exemption {source} -> {target} ({why}) expects one type-only import; found "
            f"{sorted(kinds) or 'none'}: drop it from ALLOWED_TYPE_ONLY or restore the import")
    counted = [e for e in edges if (e.source, e.target) not in ALLOWED_TYPE_ONLY]
    cycles = find_cycles(counted)
    text = "\n".join("  " + "\n    ".join(str(e) for e in c) for c in cycles)
    assert not cycles, f"import circles between crbench modules:\n{text}"


def test_every_module_has_a_layer() -> None:
    missing = sorted(m for m in module_files() if _unit(m) is None)
    assert not missing, (f"modules outside every layer: {missing}; add them to LAYERS here and "
                         "to README 'Architecture'")


def test_imports_only_go_down_the_layers() -> None:
    bad = []
    for e in import_edges():
        src, dst = _unit(e.source), _unit(e.target)
        if src is None or dst is None:
            continue  # reported by test_every_module_has_a_layer
        (src_layer, src_unit), (dst_layer, dst_unit) = src, dst
        if src_unit != dst_unit and dst_layer >= src_layer:
            bad.append(f"  {e}: {src_unit} (layer {src_layer + 1}) may not import {dst_unit} "
                       f"(layer {dst_layer + 1})")
    assert not bad, "imports against the layering of README 'Architecture':\n" + "\n".join(bad)
