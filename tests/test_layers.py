"""The import graph of `repro/`: no cycles, and no import from a lower layer to a higher one.

Every module under repro/ is parsed with `ast` (nothing is imported), and every import
statement counts, wherever it stands: at module level, inside a function (a lazy import is
still a dependency), under `if TYPE_CHECKING`. Imports through `importlib` with a computed
name (the job-body table of repro.jobs.runner) are not statements and are not seen.

The layers, top to bottom; a module may import from its own layer and the ones below it.
Each layer lists fnmatch patterns of module names; a module belongs to the first layer one
of whose patterns it matches, and a module that matches none fails the test: place it.
"""
from __future__ import annotations

import ast
import fnmatch
import textwrap
from collections import deque
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("CLIs", ("repro.table", "repro.table_*", "repro.readings", "repro.dryrun", "repro.steps", "repro.status",
              "repro.figure", "repro.bench", "repro.bench.*", "repro.features", "repro.cli",
              "repro.__main__", "repro.*.__main__")),
    # repro.config composes a spec with hydra: the first step of planning, used by plan and the CLIs.
    ("dispatch/plan", ("repro.dispatch", "repro.dispatch.*", "repro.plan", "repro.config", "repro.schema")),
    ("jobs", ("repro.jobs", "repro.jobs.*")),
    ("tasks", ("repro.tasks", "repro.tasks.*")),
    ("report", ("repro.report", "repro.report.*")),
    ("data/metrics/diffusion/nn", ("repro.data", "repro.data.*", "repro.metrics", "repro.metrics.*",
                                   "repro.diffusion", "repro.diffusion.*", "repro.nn", "repro.nn.*")),
    ("io/errors", ("repro", "repro.io", "repro.errors", "repro.weights")),    # `repro` itself: the empty package __init__
]


@dataclass(frozen=True)
class Edge:
    importer: str
    target: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class Graph:
    modules: dict[str, Path]            # module name -> file, relative to the package's parent
    edges: list[Edge]                   # imports between modules of the package
    unresolved: list[str]               # imports of names under the package that are no module


def module_name(root: Path, file: Path) -> str:
    parts = list(file.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def module_graph(root: Path) -> Graph:
    """Every import statement between modules of the package at `root` (a folder with __init__.py)."""
    package = root.name
    files = sorted(root.rglob("*.py"))
    modules = {module_name(root, f): f.relative_to(root.parent) for f in files}
    edges, unresolved = [], []
    for name, rel in modules.items():
        is_package = rel.name == "__init__.py"
        file = root.parent / rel
        for node in ast.walk(ast.parse(file.read_text(), filename=str(file))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + "."):
                        if alias.name in modules:
                            targets.append(alias.name)
                        else:
                            unresolved.append(f"{rel}:{node.lineno} imports {alias.name}, which is no module")
            elif isinstance(node, ast.ImportFrom):
                if node.level:   # relative: from the importer's package, up level - 1
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not (source == package or source.startswith(package + ".")):
                    continue
                if source not in modules:
                    unresolved.append(f"{rel}:{node.lineno} imports from {source}, which is no module")
                    continue
                for alias in node.names:   # `from pkg.sub import mod` depends on the module pkg.sub.mod
                    sub = f"{source}.{alias.name}"
                    targets.append(sub if sub in modules else source)
            for target in dict.fromkeys(targets):
                edges.append(Edge(name, target, rel, node.lineno))
    edges.sort(key=lambda e: (e.importer, e.line, e.target))    # ast.walk is breadth first: back to source order
    return Graph(modules, edges, sorted(unresolved, key=lambda u: (u.split(":")[0], int(u.split(":")[1].split()[0]))))


def cycles(graph: Graph) -> list[list[Edge]]:
    """One shortest cycle per strongly connected component (Tarjan), as the edges that close it."""
    out: dict[str, list[Edge]] = {m: [] for m in graph.modules}
    for e in graph.edges:
        out[e.importer].append(e)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for e in out[v]:
            w = e.target
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            components.append(comp)

    for v in sorted(graph.modules):
        if v not in index:
            strongconnect(v)
    found = []
    for comp in components:
        start = min(comp)
        if len(comp) == 1 and not any(e.target == start for e in out[start]):
            continue
        # Shortest path start -> ... -> start inside the component (breadth first).
        came: dict[str, Edge] = {}
        queue = deque([start])
        while queue:
            v = queue.popleft()
            closing = next((e for e in out[v] if e.target == start), None)
            if closing is not None:
                path = [closing]
                while path[0].importer != start:
                    path.insert(0, came[path[0].importer])
                found.append(path)
                break
            for e in out[v]:
                if e.target in comp and e.target not in came and e.target != start:
                    came[e.target] = e
                    queue.append(e.target)
    return found


def describe_cycle(path: list[Edge]) -> str:
    return " -> ".join(f"{e.importer} ({e.where()})" for e in path) + f" -> {path[0].importer}"


def layer_of(module: str, layers: list[tuple[str, tuple[str, ...]]]) -> int | None:
    return next((i for i, (_, patterns) in enumerate(layers)
                 if any(fnmatch.fnmatchcase(module, p) for p in patterns)), None)


def layer_problems(graph: Graph, layers: list[tuple[str, tuple[str, ...]]]) -> list[str]:
    """Unplaced modules, then every import from a lower layer to a higher one."""
    problems = [f"{graph.modules[m]}: module {m} matches no layer: place it in a layer of LAYERS (tests/test_layers.py)"
                for m in sorted(graph.modules) if layer_of(m, layers) is None]
    for e in graph.edges:
        src, dst = layer_of(e.importer, layers), layer_of(e.target, layers)
        if src is not None and dst is not None and dst < src:
            problems.append(f"{e.where()}: {e.importer} ({layers[src][0]}) imports {e.target} ({layers[dst][0]}), "
                            f"a higher layer")
    return problems


# --------------------------------------------------------------------------- the real package

def test_repro_has_no_import_cycles():
    graph = module_graph(REPO / "repro")
    assert not graph.unresolved, "\n".join(graph.unresolved)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(describe_cycle(c) for c in found)


def test_repro_imports_only_downward_through_the_layers():
    problems = layer_problems(module_graph(REPO / "repro"), LAYERS)
    assert not problems, f"{len(problems)} layer violations:\n" + "\n".join(problems)


def test_the_graph_sees_every_module_and_lazy_imports():
    graph = module_graph(REPO / "repro")
    assert set(graph.modules) == {module_name(REPO / "repro", f) for f in (REPO / "repro").rglob("*.py")}
    pairs = {(e.importer, e.target) for e in graph.edges}
    # Module level (`from repro.cli import ...`) and inside a function (table.run_table's dispatch).
    assert ("repro.table", "repro.cli") in pairs and ("repro.table", "repro.dispatch") in pairs
    assert ("repro.dispatch", "repro.dispatch.slurm") in pairs and ("repro.jobs.store", "repro.io") in pairs


# --------------------------------------------------------------------------- the checker itself

TOY_LAYERS = [("top", ("pkg.top", "pkg.top.*")), ("mid", ("pkg.mid", "pkg.mid.*")),
              ("low", ("pkg", "pkg.low", "pkg.low.*"))]


def make_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text))
    return root


def test_checker_passes_a_clean_package(tmp_path):
    root = make_package(tmp_path, {
        "top.py": "import pkg.mid\nfrom pkg.low import helper\nfrom pkg import low\n",
        "mid/__init__.py": "from pkg.mid.part import thing\n",
        "mid/part.py": "from ..low import helper\nimport os\nthing = 1\n",
        "low.py": "def helper():\n    import json\n",
    })
    graph = module_graph(root)
    assert {(e.importer, e.target) for e in graph.edges} == {
        ("pkg.top", "pkg.mid"), ("pkg.top", "pkg.low"), ("pkg.mid", "pkg.mid.part"), ("pkg.mid.part", "pkg.low")}
    assert graph.unresolved == [] and cycles(graph) == [] and layer_problems(graph, TOY_LAYERS) == []


def test_checker_names_a_cycle_closed_by_a_lazy_import(tmp_path):
    root = make_package(tmp_path, {
        "top.py": "from pkg.mid import a\n",
        "mid/__init__.py": "",
        "mid/a.py": "from pkg.mid import b\n",
        "mid/b.py": "from . import c\n",
        "mid/c.py": "import os\n\n\ndef f():\n    from pkg.mid.a import g\n",
    })
    found = cycles(module_graph(root))
    assert len(found) == 1
    assert describe_cycle(found[0]) == ("pkg.mid.a (pkg/mid/a.py:1) -> pkg.mid.b (pkg/mid/b.py:1) -> "
                                        "pkg.mid.c (pkg/mid/c.py:5) -> pkg.mid.a")
    self_loop = make_package(tmp_path / "self", {"low.py": "def f():\n    import pkg.low\n"})
    assert [describe_cycle(c) for c in cycles(module_graph(self_loop))] == ["pkg.low (pkg/low.py:2) -> pkg.low"]


def test_checker_names_an_upward_import_with_its_line_and_an_unplaced_module(tmp_path):
    root = make_package(tmp_path, {
        "top.py": "",
        "mid/__init__.py": "",
        "mid/m.py": "x = 1\n",
        "low.py": "x = 1\n\n\ndef f():\n    from pkg.mid.m import x\n    from .top import y\n",
        "stray.py": "",
    })
    problems = layer_problems(module_graph(root), TOY_LAYERS)
    assert problems == [
        "pkg/stray.py: module pkg.stray matches no layer: place it in a layer of LAYERS (tests/test_layers.py)",
        "pkg/low.py:5: pkg.low (low) imports pkg.mid.m (mid), a higher layer",
        "pkg/low.py:6: pkg.low (low) imports pkg.top (top), a higher layer",
    ]
    assert cycles(module_graph(root)) == []      # an upward import is no cycle by itself


def test_checker_flags_imports_of_modules_that_do_not_exist(tmp_path):
    root = make_package(tmp_path, {"top.py": "def f():\n    from pkg.gone import x\n    import pkg.also_gone\n"})
    assert module_graph(root).unresolved == ["pkg/top.py:2 imports from pkg.gone, which is no module",
                                             "pkg/top.py:3 imports pkg.also_gone, which is no module"]
