from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from distill.teacher import labels
from distill.teacher.base import AdaptConfig, TeacherConfig, TeacherError
from distill.teacher.cache import TeacherCache, TeacherPlan
from distill.teacher.prepare import prepare
from distill.teacher.stage import run_teacher
from distill.training.loop import LoopConfig
from storage.atomic import read_json
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.split import make_split
from tests.conftest import synthetic_tables, write_tables

SMALL_HEAD = {
    "dim": 8,
    "n_heads": 2,
    "history_len": 6,
    "heads": 1,
    "loop": {"max_epochs": 3, "patience": 2},
}


def _config(path: Path, **kw) -> TeacherConfig:
    adapt = AdaptConfig(**{**SMALL_HEAD, **kw.pop("adapt", {})})
    return TeacherConfig(model_path=path, users_per_shard=8, adapt=adapt, **kw)


def test_all_pairs_cache_layout_and_zero_pass_rerun(synthetic, work, tiny_encoder_path):
    dataset, split = synthetic
    cfg = _config(tiny_encoder_path)
    first = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    cache = Path(first.plan.cache_dir)
    prefixes = sum(max(len(seq) - 1, 0) for seq in split.train_sequences())
    top_k = min(cfg.position_top_k, split.n_items)
    assert first.manifest["total_rows"] == split.n_users * split.n_items + prefixes * top_k
    assert len(first.manifest["shards"]) == 4  # 30 users / 8 per shard
    assert first.stats["item_texts_encoded"] == 40 and first.stats["user_texts_encoded"] == 30
    for name in ("items.parquet", "users.parquet", "items_texts.parquet", "report.json"):
        assert (cache / name).exists()
    items = pl.read_parquet(cache / "items.parquet")
    assert items.columns == ["item_idx", "text_hash", "embedding", "vector"]
    labels = first.plan.store.scan().collect()
    key = pl.struct("user_idx", "position", "item_idx")
    assert labels.select(key.n_unique()).item() == labels.height
    whole = labels.filter(pl.col("position") == -1)
    assert whole.height == split.n_users * split.n_items
    per_prefix = labels.filter(pl.col("position") > 0).group_by("user_idx", "position").len()
    assert per_prefix.height == prefixes and (per_prefix.get_column("len") == top_k).all()

    again = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    assert again.stats["forward_passes"] == 0 and again.stats["reused"]
    assert again.plan.fingerprint == first.plan.fingerprint


def test_fingerprint_changes_with_what_changes_outputs(synthetic, work, tiny_encoder_path):
    dataset, split = synthetic
    base = run_teacher(_config(tiny_encoder_path), dataset, split, work_dir=work, progress=False)
    other_tau = run_teacher(
        _config(tiny_encoder_path, tau=0.5), dataset, split, work_dir=work, progress=False
    )
    assert other_tau.plan.fingerprint != base.plan.fingerprint
    assert other_tau.stats["forward_passes"] == 0  # embeddings reused by text hash


def test_incremental_encodes_only_changed_texts(tmp_path, work, tiny_encoder_path):
    tables = synthetic_tables()
    paths = write_tables(tmp_path / "v1", tables)
    cfg = _config(tiny_encoder_path)
    v1 = load_dataset(
        work,
        "syn",
        ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=work).version,
    )
    run_teacher(cfg, v1, make_split(v1), work_dir=work, progress=False)

    new_items = pl.DataFrame(
        {
            "item_id": [f"n{i}" for i in range(10)],
            "title": [f"New film {i}" for i in range(10)],
            "year": ["2001"] * 10,
            "genres": ["Drama"] * 10,
        }
    )
    new_inter = pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in range(5)],
            "item_id": [f"n{u}" for u in range(5)],
            "timestamp": [9_000 + u for u in range(5)],
        }
    )
    tables2 = {
        "interactions": pl.concat([tables["interactions"], new_inter]),
        "items": pl.concat([tables["items"], new_items]),
        "users": tables["users"],
    }
    paths2 = write_tables(tmp_path / "v2", tables2)
    v2 = load_dataset(
        work,
        "syn",
        ingest(DatasetConfig(name="syn", source="files", **paths2), work_dir=work).version,
    )
    run = run_teacher(cfg, v2, make_split(v2), work_dir=work, progress=False)
    assert run.stats["item_texts_encoded"] == 10
    assert run.stats["user_texts_encoded"] == 5


def test_candidates_policy(synthetic, work, tiny_encoder_path):
    dataset, split = synthetic
    cfg = _config(tiny_encoder_path, pairs="candidates", candidates_top_k=5, candidates_random=3)
    labels = run_teacher(cfg, dataset, split, work_dir=work, progress=False).plan.store.scan()
    labels = labels.filter(pl.col("position") == -1).collect()  # the whole-history label
    per_user = labels.group_by("user_idx").len().get_column("len")
    assert per_user.min() >= 5 and per_user.max() <= 5 + 3 + 8
    train = split.fold("train").select("user_idx", "item_idx")
    assert train.join(labels, on=["user_idx", "item_idx"], how="anti").height == 0


def test_candidates_are_each_users_sorted_unique_union():
    """The shard-wide de-duplication gives, per user, exactly np.unique of the user's own top-K
    (-1 = none), train items and seeded random draws."""
    rng = np.random.default_rng(0)
    n_items, users = 60, np.arange(100, 123)
    top = rng.integers(0, n_items, (len(users), 12))
    top[rng.random(top.shape) < 0.3] = -1
    train = sp.random(len(users), n_items, density=0.15, format="csr", random_state=1)
    got = labels.candidates(top, train, n_items, 7, 3, users)
    assert len(got) == len(users)
    for row, user in enumerate(users):
        draws = np.random.default_rng([3, int(user)]).choice(n_items, size=7, replace=False)
        own = train.indices[train.indptr[row] : train.indptr[row + 1]]
        want = np.unique(np.concatenate([top[row][top[row] >= 0], own, draws]))
        np.testing.assert_array_equal(got[row], want)


@pytest.mark.parametrize("mode", ["top_layers", "lora"])
def test_lm_adaptation_modes_run_on_a_tiny_model(synthetic, work, tiny_encoder_path, mode):
    dataset, split = synthetic
    cfg = _config(tiny_encoder_path, adapt={"mode": mode, "max_epochs": 2})
    run = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    report = read_json(Path(run.plan.cache_dir) / "report.json")
    assert report["adaptation"]["mode"] == mode and "adapted" in report
    assert run.stats["forward_passes"] > 2  # the LM ran inside the training loop


def test_causal_teacher_candidates(synthetic, work, tiny_causal_path):
    dataset, split = synthetic
    cfg = TeacherConfig(
        kind="causal",
        model_path=tiny_causal_path,
        pairs="candidates",
        candidates_top_k=3,
        candidates_random=1,
        users_per_shard=16,
    )
    run = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    scores = run.plan.store.scan().collect().get_column("score").to_numpy()
    assert np.isfinite(scores).all() and scores.std() > 0


def test_nan_outputs_fail_the_shard_and_write_nothing(
    synthetic, work, tiny_encoder_path, monkeypatch
):
    dataset, split = synthetic
    cfg = _config(tiny_encoder_path, adapt={"mode": "none"})
    plan = prepare(cfg, dataset, split, work_dir=work)
    from distill.teacher.cache import TeacherCache

    real = TeacherCache.vectors
    monkeypatch.setattr(TeacherCache, "vectors", lambda *a, **k: real(*a, **k) * np.nan)
    with pytest.raises(TeacherError, match="NaN/inf"):
        labels.score_shard(Path(plan.cache_dir), plan.shards[0][0], work_dir=work)
    assert not list(plan.store.root.glob("shard-*")) if plan.store.root.exists() else True


RESUME_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from distill.teacher import labels, stage
    from distill.teacher.base import AdaptConfig, TeacherConfig
    from storage.datasets import load_dataset
    from storage.split import make_split
    work, model = Path(sys.argv[1]), Path(sys.argv[2])
    real = labels.score_shard
    def slow(*a, **k):
        info = real(*a, **k)
        time.sleep(0.5)
        return info
    labels.score_shard = slow
    ds = load_dataset(work, "syn")
    cfg = TeacherConfig(model_path=model, users_per_shard=4, adapt=AdaptConfig(mode="none"))
    stage.run_teacher(cfg, ds, make_split(ds), work_dir=work, progress=False)
""")


def test_sigkill_mid_run_then_resume_gives_identical_shards(tmp_path, tiny_encoder_path):
    paths = write_tables(tmp_path / "src", synthetic_tables())
    works = [tmp_path / "killed", tmp_path / "clean"]
    for w in works:
        ingest(DatasetConfig(name="syn", source="files", **paths), work_dir=w)
    cfg = TeacherConfig(
        model_path=tiny_encoder_path, users_per_shard=4, adapt=AdaptConfig(mode="none")
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.Popen(
        [sys.executable, "-c", RESUME_SCRIPT, str(works[0]), str(tiny_encoder_path)], env=env
    )
    deadline = time.time() + 120
    shards_dir = None
    while time.time() < deadline:
        found = list(works[0].glob("cache/teacher/*/soft_labels/shard-*.parquet"))
        if len(found) >= 2:
            shards_dir = found[0].parent
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert shards_dir is not None, "the subprocess never wrote a shard"
    assert not (shards_dir / "manifest.json").exists()  # killed before the commit
    results = []
    for w in works:
        ds = load_dataset(w, "syn")
        results.append(run_teacher(cfg, ds, make_split(ds), work_dir=w, progress=False))
    resumed, clean = results
    assert resumed.stats["forward_passes"] == 0  # embeddings were cached before the kill
    assert [s["sha256"] for s in resumed.manifest["shards"]] == [
        s["sha256"] for s in clean.manifest["shards"]
    ]


def test_head_ensemble_scores_are_the_mean_of_its_heads():
    import numpy as np
    import torch

    from distill.teacher import adapt

    config = AdaptConfig(dim=8, n_heads=2, history_len=5, heads=3)
    text = adapt.FrozenText(np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    model = adapt.build_teacher_model(12, 4, config, text).eval()
    hist = torch.tensor([[12, 12, 3, 4, 5], [1, 2, 3, 4, 5]])
    with torch.no_grad():
        items = model.item_vectors()
        ensemble = model.history_vectors(hist, items) @ items.T
        each = []
        for k in range(3):
            head = model.head(k)
            head_items = head.item_vectors()
            each.append(head.history_vectors(hist, head_items) @ head_items.T)
    assert items.shape == (12, 3 * 8)
    torch.testing.assert_close(ensemble, torch.stack(each).mean(0))
    assert not torch.allclose(each[0], each[1])  # the heads are seeded apart


def test_two_heads_train_side_by_side_and_cache_concatenated_vectors(
    synthetic, work, tiny_encoder_path
):
    import json

    dataset, split = synthetic
    cfg = _config(tiny_encoder_path, adapt={"heads": 2})
    run = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    cache = Path(run.plan.cache_dir)
    training = json.loads((Path(run.plan.adapter_path).parent / "training.json").read_text())
    assert [h["seed"] for h in training["heads"]] == [0, 1]
    vectors = TeacherCache(cache).vectors
    assert vectors("items").shape == (split.n_items, 2 * SMALL_HEAD["dim"])
    assert vectors("users", "test_vector").shape == (split.n_users, 16)


def test_a_copied_work_dir_reads_and_writes_its_own_files(
    synthetic, work, tmp_path, tiny_encoder_path
):
    """plan.json records absolute paths; a copy must not write into the folder it came from."""
    import shutil

    dataset, split = synthetic
    cfg = _config(tiny_encoder_path)
    first = run_teacher(cfg, dataset, split, work_dir=work, progress=False)
    original = Path(first.plan.cache_dir) / "soft_labels"
    before = {p.name: p.read_bytes() for p in original.iterdir()}
    copy = tmp_path / "moved"
    shutil.copytree(work, copy)
    moved_cache = copy / Path(first.plan.cache_dir).relative_to(work)
    shutil.rmtree(moved_cache / "soft_labels")
    plan = TeacherPlan.load(moved_cache)
    for path in (plan.cache_dir, plan.dataset_path, plan.adapter_path):
        assert Path(path).is_relative_to(copy), path
    moved = load_dataset(copy, "syn", dataset.path.name)
    again = run_teacher(cfg, moved, make_split(moved), work_dir=copy, progress=False)
    assert Path(again.plan.cache_dir) == moved_cache
    assert {p.name: p.read_bytes() for p in original.iterdir()} == before  # untouched
    assert {p.name for p in (moved_cache / "soft_labels").iterdir()} == set(before)


def test_a_head_trains_on_a_sampled_softmax(synthetic):
    """`adapt.sampled_negatives`: the head's loss runs over the step's sampled columns (log-Q
    corrected), a different loss from the full softmax's, and it trains."""
    from distill.teacher import adapt

    _, split = synthetic
    text = adapt.FrozenText(
        np.random.default_rng(0).normal(size=(split.n_items, 4)).astype(np.float32)
    )
    histories = {}
    for negatives in (0, 5):
        loop = LoopConfig(max_epochs=2, patience=2, batch_size=8)
        config = AdaptConfig(dim=8, history_len=6, sampled_negatives=negatives, loop=loop)
        model = adapt.build_teacher_model(split.n_items, 4, config, text)
        histories[negatives] = adapt.train_head(model, split, config).history
    sampled, full = histories[5], histories[0]
    assert all(np.isfinite(row["loss"]) for row in sampled)
    assert sampled[0]["loss"] < full[0]["loss"]  # fewer competitors than every item
