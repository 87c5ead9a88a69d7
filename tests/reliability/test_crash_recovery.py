"""SIGKILL the pipeline at every crash point, re-run, and compare with a clean run.

Each scenario: the killed run must leave nothing partial visible to a reader, and after a re-run
the final state must equal an uninterrupted run's: same dataset hashes, same teacher shard hashes,
same published bundle files and validation metrics, exactly one published version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.datasets import load_dataset
from storage.registry import Registry
from storage.shards import ShardStore
from storage.workdir import WorkDir
from tests.conftest import synthetic_tables, write_tables

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).parent / "pipeline_run.py"
DETERMINISTIC_FILES = ("student.safetensors", "items.faiss", "items.parquet", "users.parquet")

# (crash point, fast?) — the fast ones run in `make test`, all of them in `make test-slow`
SCENARIOS = [
    ("ingest.before_commit", True),  # during ingest, tables staged but not renamed
    ("shard.write:000008", False),  # while writing a teacher shard (temp complete)
    ("teacher.after_shard", True),  # between teacher shards
    ("teacher.before_manifest", False),  # between the last shard and the manifest
    ("train.after_checkpoint", True),  # between student checkpoints
    ("write:checkpoint.safetensors", False),  # during a checkpoint write
    ("publish.before_rename", False),  # bundle staged, not renamed
    ("publish.before_current", True),  # bundle renamed, CURRENT not switched
    ("write:CURRENT", False),  # during the CURRENT switch
]


def _run(work: Path, src: Path, model: Path, crash: str | None = None) -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KDREC_CRASH_AT", None)
    if crash:
        env["KDREC_CRASH_AT"] = crash
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(work), str(src), str(model)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # a crash point kills the process group: the run's, not pytest's
    )
    if proc.returncode not in (0, -9):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


def _state(work: Path) -> dict:
    dataset = load_dataset(work, "syn")
    dataset.verify()
    stores = [ShardStore(p.parent) for p in work.glob("cache/teacher/*/soft_labels/manifest.json")]
    registry = Registry(WorkDir(work).registry, "kdrec")
    bundle = registry.bundle()
    bundle.verify()
    return {
        "dataset": {k: v["content_sha256"] for k, v in dataset.meta["tables"].items()},
        "shards": sorted(s["sha256"] for store in stores for s in store.manifest()["shards"]),
        "bundle": {n: bundle.manifest["files"][n] for n in DETERMINISTIC_FILES},
        "validation": bundle.manifest["validation"],
        "versions": len(registry.versions()),
    }


def _reader_view_is_consistent(work: Path) -> None:
    """What a reader can see right after the crash is whole (or absent), never partial."""
    if (work / "data" / "syn" / "LATEST").exists():
        load_dataset(work, "syn").verify()
    for manifest in work.glob("cache/teacher/*/soft_labels/manifest.json"):
        ShardStore(manifest.parent).verify()
    registry = Registry(WorkDir(work).registry, "kdrec")
    if registry.current_version():
        registry.bundle().verify()


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_encoder_path):
    base = tmp_path_factory.mktemp("clean")
    src = base / "src"
    write_tables(src, synthetic_tables())
    assert _run(base / "work", src, tiny_encoder_path) == 0
    return src, _state(base / "work")


@pytest.mark.parametrize(
    "crash",
    [pytest.param(c, marks=() if fast else pytest.mark.slow, id=c) for c, fast in SCENARIOS],
)
def test_crash_then_rerun_equals_clean_run(clean, tmp_path, tiny_encoder_path, crash):
    src, expected = clean
    work = tmp_path / "work"
    assert _run(work, src, tiny_encoder_path, crash) == -9, f"{crash} was never reached"
    _reader_view_is_consistent(work)
    assert _run(work, src, tiny_encoder_path) == 0
    assert _state(work) == expected
