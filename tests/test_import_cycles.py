"""No import cycle among the modules of storage/, distill/ and pipelines/, counting every import:
at module level, inside functions and under TYPE_CHECKING (a cycle means two modules share one
job, or one owns the other's type)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("storage", "distill", "pipelines")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (a name imported from a module counts as that module,
    or the submodule of that name)."""

    def owner(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {owner(a.name) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else owner(node.module))
    return {m for m in found if m}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    assert len(graph) > 60  # the walk found the packages
    assert cycles(graph) == []


def test_the_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# distill/'s layers, bottom first: a module may import its own layer and the ones below, never
# one above (the data path: evaluation is the base the stages import; studies sit on top)
DISTILL_LAYERS = (
    ("texts", "index", "nn", "training"),
    ("evaluation",),
    ("teacher",),
    ("student",),
    ("serving",),
    ("studies",),
)


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != "distill" or len(parts) < 2:
        return None
    for level, names in enumerate(DISTILL_LAYERS):
        if parts[1] in names:
            return level
    raise AssertionError(f"{module} is in no layer of DISTILL_LAYERS: place it")


def back_arrows(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for source, targets in sorted(graph.items()):
        here = layer_of(source)
        for target in sorted(targets):
            there = layer_of(target)
            if here is not None and there is not None and there > here:
                found.append(f"{source} -> {target}")
    return found


def test_no_back_arrow_between_distill_subpackages():
    known = modules()
    graph = {name: imports(path, known) - {name} for name, path in known.items()}
    assert back_arrows(graph) == []


def test_the_layer_check_finds_a_back_arrow():
    graph = {"distill.evaluation.harness": {"distill.student.fit"}, "distill.studies.x": set()}
    assert back_arrows(graph) == ["distill.evaluation.harness -> distill.student.fit"]
