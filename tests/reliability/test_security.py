"""No untrusted-data execution: scan our own code for unsafe deserialisation and eval/exec."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from storage.atomic import validate_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipelines", "distill", "storage", "bench")


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_code_scan_finds_no_unsafe_calls():
    problems = []
    for path in _sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node, name in _calls(tree):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if name in ("pickle.load", "pickle.loads", "cloudpickle.load", "dill.load"):
                problems.append(f"{where} {name}")
            if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
                problems.append(f"{where} {name}")
            if name == "torch.load" and keywords.get("weights_only") != "True":
                problems.append(f"{where} torch.load without weights_only=True")
            if name == "yaml.load" and "Safe" not in keywords.get("Loader", ""):
                problems.append(f"{where} yaml.load without a safe loader")
            if name in ("yaml.unsafe_load", "yaml.full_load"):
                problems.append(f"{where} {name}")
            if (
                name.endswith("read_pickle")
                or name.endswith("np.load")
                and keywords.get("allow_pickle") == "True"
            ):
                problems.append(f"{where} {name}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(n in ("pickle", "cloudpickle", "dill", "marshal") for n in names):
                    problems.append(f"{path.relative_to(ROOT)}:{node.lineno} imports pickle")
    assert problems == []


def test_scanner_catches_what_it_should(tmp_path):
    bad = "import pickle\npickle.load(f)\ntorch.load(p)\nyaml.load(s)\neval('1')\n"
    tree = ast.parse(bad)
    names = [name for _, name in _calls(tree)]
    assert {"pickle.load", "torch.load", "yaml.load", "eval"} <= set(names)


@pytest.mark.parametrize(
    "name", ["..", "../x", "a/b", "/abs", "a\\b", "", ".hidden", "x" * 200, "a\x00b", "~user"]
)
def test_path_traversal_names_are_rejected(name):
    with pytest.raises(ValueError):
        validate_name(name)


@pytest.mark.parametrize("name", ["movielens-100k", "kdrec", "v20261129T010203-asof", "a.b_c@1"])
def test_ordinary_names_pass(name):
    assert validate_name(name) == name
