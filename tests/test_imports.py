"""The library's import graph has no cycle: every `padim_lib` import, at module level or inside a
function, read from the source (so an import that only runs on some path counts too)."""

from __future__ import annotations

import ast
from pathlib import Path

import padim_lib

ROOT = Path(padim_lib.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = "padim_lib." + path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        out[name.removesuffix(".__init__")] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the padim_lib modules it imports (`from padim_lib import x` is module x when it is one)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            graph[module] |= {r for n in names if n.startswith("padim_lib") and (r := resolve(n)) not in (None, module)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "padim_lib.methods.registry" in graph["padim_lib.engine.task"]
    assert cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_is_over_500_lines():
    long = {p.relative_to(ROOT).as_posix(): n for p in ROOT.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert long == {}


# Each layer (a sub-package, or errors.py) and the layers it may import: only downward. metrics is
# pure numerics; io and errors are the floor. The package's __init__ (the version, and the public
# names loaded on first use) may be imported by any layer; it imports errors only. __main__ runs the CLI.
ORDER = ("errors", "io", "datasets", "features", "metrics", "methods", "engine", "paper", "report", "cli")
ALLOWED: dict[str, set[str]] = {layer: set(ORDER[:i]) for i, layer in enumerate(ORDER)}
ALLOWED["metrics"] = {"errors"}
ALLOWED["datasets"] = {"errors", "io"}
ALLOWED["features"] = {"errors", "io", "datasets"}
ALLOWED["__init__"] = {"errors"}
ALLOWED["__main__"] = {"cli"}
for _layer in ORDER:
    ALLOWED[_layer].add("__init__")


def layer_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """'a -> b' for every import of a layer that `ALLOWED` does not let `a`'s layer import."""
    out = []
    for module, imported in graph.items():
        layer = layer_of(module)
        for other in sorted(imported):
            target = layer_of(other)
            if target != layer and target not in ALLOWED[layer]:
                out.append(f"{module} -> {other}")
    return out


def test_every_module_belongs_to_a_layer_and_imports_only_downward():
    graph = import_graph()
    assert {layer_of(m) for m in graph} == set(ALLOWED)
    assert upward_imports(graph) == []


def test_the_layer_rule_catches_an_upward_import():
    graph = {"padim_lib.metrics.image": {"padim_lib.methods.registry"}, "padim_lib.cli": {"padim_lib.paper.run"},
             "padim_lib.engine.task": {"padim_lib.report.plots"}}
    assert upward_imports(graph) == ["padim_lib.metrics.image -> padim_lib.methods.registry",
                                     "padim_lib.engine.task -> padim_lib.report.plots"]


def test_at_most_twelve_top_level_modules_and_small_modules():
    top = sorted(p.name for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file())
    assert len(top) <= 12, top
    long = {str(p.relative_to(ROOT)): n for p in ROOT.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long, long
