"""Damaged shards, a full disk, concurrent runs and readers during publishes and rollbacks."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from safetensors.torch import save

from distill import index as faiss_index
from distill.student.build import build_student
from distill.student.config import StudentConfig
from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.teacher.soft_labels import SoftLabels
from distill.teacher.stage import run_teacher
from storage.atomic import parquet_bytes
from storage.embeddings import embedding_column
from storage.errors import IntegrityError
from storage.registry import Registry
from tests.conftest import synthetic_tables, write_tables
from tests.reliability.test_crash_recovery import ROOT, _run, _state

CONFIG = dict(users_per_shard=8, adapt=AdaptConfig(mode="none"))


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_damaged_shard_is_named_and_only_it_is_recomputed(
    synthetic, work, tiny_encoder_path, damage
):
    dataset, split = synthetic
    cfg = TeacherConfig(model_path=tiny_encoder_path, **CONFIG)
    first = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    shards = first.manifest["shards"]
    victim = first.plan.store.root / shards[1]["file"]
    raw = bytearray(victim.read_bytes())
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    else:
        raw[len(raw) // 3] ^= 0x40
    victim.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=shards[1]["file"]):
        SoftLabels(Path(first.plan.cache_dir))
    again = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    assert again.stats["repaired"] == [shards[1]["key"]] and again.stats["forward_passes"] == 0
    assert again.manifest["shards"] == shards  # recomputed bytes are identical
    SoftLabels(Path(first.plan.cache_dir))


def test_disk_full_fails_clearly_and_keeps_the_previous_state(
    synthetic, work, tiny_encoder_path, monkeypatch
):
    import storage.shards

    dataset, split = synthetic
    good = run_teacher(
        TeacherConfig(model_path=tiny_encoder_path, **CONFIG),
        dataset,
        split,
        work_dir=work,
        progress=False,
    )

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage.shards.pq, "write_table", full)
    other = TeacherConfig(model_path=tiny_encoder_path, tau=0.5, **CONFIG)
    with pytest.raises(OSError, match="No space left"):
        run_teacher(other, dataset, split, work_dir=work, progress=False)
    monkeypatch.undo()
    assert SoftLabels(Path(good.plan.cache_dir)).store.verify()  # previous cache intact
    assert not list(Path(good.plan.cache_dir).parent.rglob(".tmp-shard-*"))  # no debris


def test_disk_full_during_publish_keeps_current(tmp_path, monkeypatch):
    import storage.atomic

    reg = Registry(tmp_path, "m")
    first = reg.publish(fake_bundle(0), validation={"ndcg@10": 0.05})
    real = storage.atomic.os.replace

    def full(src, dst):
        if str(dst).endswith("items.faiss"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(storage.atomic.os, "replace", full)
    with pytest.raises(OSError, match="No space left"):
        reg.publish(fake_bundle(1), validation={"ndcg@10": 0.06})
    monkeypatch.undo()
    assert reg.current_version() == first.version and reg.versions() == [first.version]
    reg.bundle().verify()


def fake_bundle(seed: int, n_items: int = 50, n_users: int = 20, dim: int = 8) -> dict:
    """A loadable bundle of an untrained two-tower student with random serving vectors."""
    rng = np.random.default_rng(seed)
    items, users = rng.normal(size=(n_items, dim)), rng.normal(size=(n_users, dim))
    student = StudentConfig(kind="two_tower", dim=dim)
    state = build_student(student, n_users, n_items, None).state_dict()
    index, _ = faiss_index.build_index(items.astype(np.float32))
    return {
        "items.faiss": faiss_index.to_bytes(index),
        "items.parquet": parquet_bytes(
            pa.table(
                {
                    "item_idx": pa.array(np.arange(n_items, dtype=np.int32)),
                    "item_id": [f"i{i}" for i in range(n_items)],
                    "title": [f"T{i}" for i in range(n_items)],
                    "popularity": pa.array(rng.integers(0, 9, n_items)),
                    "vector": embedding_column(items),
                }
            )
        ),
        "users.parquet": parquet_bytes(
            pa.table(
                {
                    "user_idx": pa.array(np.arange(n_users, dtype=np.int32)),
                    "user_id": [f"u{u}" for u in range(n_users)],
                    "seen": pa.array([[0, 1]] * n_users, pa.list_(pa.int32())),
                    "vector": embedding_column(users),
                }
            )
        ),
        "student.safetensors": save(state),
        "config.json": json.dumps(
            {"seed": seed, "student": student.model_dump(), "n_users": n_users}
        ).encode(),
    }


READER = """
import sys, time
from pathlib import Path
from distill.serving.recommend import Recommender
root, deadline = Path(sys.argv[1]), time.time() + float(sys.argv[2])
loads = errors = 0
while time.time() < deadline:
    try:
        rec = Recommender.load(root, "m")
        assert len(rec.recommend("u3", k=5)) == 5
        loads += 1
    except Exception as exc:
        errors += 1
        print(repr(exc), file=sys.stderr)
print(loads, errors)
"""


def test_readers_never_fail_during_publishes_and_rollbacks(tmp_path):
    reg = Registry(tmp_path, "m")
    versions = [reg.publish(fake_bundle(0), validation={"ndcg@10": 0.05}).version]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path), "8"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2.0)  # let the reader start loading
    for i in range(1, 40):
        if i % 3 == 0:
            reg.rollback(versions[i % len(versions)])
        else:
            versions.append(reg.publish(fake_bundle(i), validation={"ndcg@10": 0.05}).version)
    out, err = reader.communicate(timeout=60)
    loads, errors = map(int, out.split())
    assert errors == 0, err[-2000:]
    assert loads > 5


def test_two_concurrent_runs_on_one_store(tmp_path, tiny_encoder_path):
    src = tmp_path / "src"
    write_tables(src, synthetic_tables())
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("KDREC_CRASH_AT", None)
    script = str(ROOT / "tests" / "reliability" / "pipeline_run.py")
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(work), str(src), str(tiny_encoder_path)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    state = _state(work)  # everything verifies
    assert state["versions"] == 1  # the same model published once, not twice
    assert _run(work, src, tiny_encoder_path) == 0 and _state(work) == state
