"""Each on-disk name is spelled by the one module that owns its folder: the work dir's `registry`
and `cache` by WorkDir, `report.json` by the run folder, the bundle and the teacher cache,
`manifest.json` by the registry and the shard store. Docstrings and comments may name them."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWNERS = {
    "registry": {"storage/workdir.py"},
    "cache": {"storage/workdir.py"},
    "report.json": {"storage/rundir.py", "distill/serving/bundle.py", "distill/teacher/cache.py"},
    "manifest.json": {"storage/registry.py", "storage/shards.py"},
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def _names(value: str) -> set[str]:
    return {name for name in OWNERS if name in value.split("/")}


def literals(source: str) -> list[tuple[int, str]]:
    """(line, owned name) for every string literal naming one, docstrings aside."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    return [
        (node.lineno, name)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip
        for name in _names(node.value)
    ]


def test_owned_names_are_spelled_only_by_their_owners():
    found = [
        f"{path.relative_to(ROOT)}:{line}: {name!r}"
        for package in ("storage", "distill", "pipelines")
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in literals(path.read_text())
        if str(path.relative_to(ROOT)) not in OWNERS[name]
    ]
    assert not found, "path literals outside their owner:\n" + "\n".join(found)


def test_the_check_finds_a_literal_and_ignores_docstrings():
    source = '"""report.json"""\ndef f():\n    """manifest.json"""\n    return r / "registry"\n'
    assert literals(source) == [(4, "registry")]
    assert literals('path = f"{run}/report.json"\n') == [(1, "report.json")]
