"""The teacher stage's labels: one user range -> its soft labels written as one shard (the
candidates the LM scores, the heads' position labels), then the manifest, written last
(`commit`); `repair` and `is_complete` check a cache's shards."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp
import torch

from distill.nn.sasrec import window_targets, windows
from distill.teacher.base import (
    TeacherConfig,
    TeacherError,
    check_finite,
)
from distill.teacher.cache import TeacherCache, TeacherPlan
from distill.teacher.memo import PerProcess
from distill.teacher.prepare import load_teacher
from storage.datasets import Dataset
from storage.faults import crash_point
from storage.shards import ShardInfo
from storage.split import Split

log = logging.getLogger(__name__)
_SHARED: PerProcess[Any] = PerProcess(limit=8)  # what shard tasks share: split, vectors, index


def candidates(
    top: np.ndarray,
    train: sp.csr_matrix,
    n_items: int,
    n_random: int,
    seed: int,
    users: np.ndarray,
) -> list[np.ndarray]:
    """Per user (row of `top` and of `train`): the teacher's top-K (-1 = none) + the user's train
    positives + K' random negatives (drawn from the user's own seed), sorted and unique. The
    de-duplication is one sort over the shard's (row, item) keys, not one `np.unique` a user."""
    rows = len(users)
    if not rows:
        return []
    size = min(n_random, n_items)
    rand = np.array(
        [
            np.random.default_rng([seed, int(user)]).choice(n_items, size=size, replace=False)
            for user in users
        ],
        dtype=np.int64,
    ).reshape(rows, size)
    found = top >= 0
    owner = np.concatenate(
        [
            np.nonzero(found)[0],
            np.repeat(np.arange(rows), np.diff(train.indptr)),
            np.repeat(np.arange(rows), size),
        ]
    )
    item = np.concatenate([top[found], train.indices, rand.reshape(-1)]).astype(np.int64)
    keys = np.sort(owner * n_items + item)  # by row, then item
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # numpy 2.4's unique: 45x slower
    counts = np.bincount(keys // n_items, minlength=rows)
    return np.split(keys % n_items, np.cumsum(counts)[:-1])


def score_shard(cache_dir: Path, key: str, *, work_dir: Path) -> ShardInfo:
    """Compute and write one shard of soft labels; a shard already on disk is reused.

    Rows are (user_idx, position, item_idx, score). position -1: the label after the user's whole
    train history (every pair, or the candidates). position t >= 1: the adapted head's top
    `position_top_k` items after the first t train items, for students trained on every prefix.
    """
    cache = TeacherCache(cache_dir)
    plan = cache.plan
    store = plan.store
    done = store.pending(key).get(key)
    if done is not None:
        return done
    _, start, end = next(s for s in plan.shards if s[0] == key)
    config = plan.teacher_config
    user_vec = _SHARED.get(f"users:{cache.folder}", lambda: cache.vectors("users"))[start:end]
    item_vec = _SHARED.get(f"items:{cache.folder}", lambda: cache.vectors("items"))
    users = np.arange(start, end)
    split = None
    if config.pairs == "all":
        cands = [np.arange(plan.n_items)] * len(users)
        labels = list((user_vec @ item_vec.T).astype(np.float32))  # (U, I)
    else:  # the index finds each user's top-K: no (users x items) matrix
        split = _plan_split(plan)
        index = _SHARED.get(f"candidates:{cache.folder}", lambda: cache.candidate_index(item_vec))
        k = min(config.candidates_top_k, plan.n_items)
        _, top = index.search(np.ascontiguousarray(user_vec, dtype=np.float32), k)
        cands = candidates(
            top,
            split.train[start:end],
            plan.n_items,
            config.candidates_random,
            config.adapt.loop.seed,
            users,
        )
        labels = [(item_vec[c] @ user_vec[row]).astype(np.float32) for row, c in enumerate(cands)]
    if config.kind == "causal" and config.pairs == "candidates":
        from distill.teacher.causal import CausalLMTeacher

        teacher = load_teacher(config, work_dir)
        if not isinstance(teacher, CausalLMTeacher):
            raise TypeError(f"pairs: candidates needs a causal LM teacher, got {type(teacher)}")
        utexts, item_list = cache.texts("users"), cache.texts("items")
        labels = [
            teacher.score_shared(utexts[int(u)], [item_list[i] for i in c])
            for u, c in zip(users, cands, strict=True)
        ]
    parts = [_label_table(users, np.full(len(users), -1), cands, labels)]
    if plan.adapter_path and config.position_top_k:
        split = split or _plan_split(plan)
        parts.append(_position_labels(cache, config, split, users))
    info = store.write_shard(key, pa.concat_tables(parts))
    crash_point("teacher.after_shard")
    return info


def _label_table(
    users: np.ndarray, positions: np.ndarray, items: list[np.ndarray], scores: list[np.ndarray]
) -> pa.Table:
    """Soft-label rows: one (user, position) per entry of `users`/`positions`, with its items."""
    sizes = [len(c) for c in items]
    return pa.table(
        {
            "user_idx": pa.array(np.repeat(users, sizes).astype(np.int32)),
            "position": pa.array(np.repeat(positions, sizes).astype(np.int32)),
            "item_idx": pa.array(np.concatenate(items).astype(np.int32)),
            "score": pa.array(
                check_finite(np.concatenate(scores).astype(np.float32), what="pairs")
            ),
        }
    )


def _plan_split(plan: TeacherPlan) -> Split:
    """The plan's split, loaded once per process (every shard task of a worker shares it)."""
    from storage.split import make_split

    return _SHARED.get(
        f"split:{plan.dataset_path}:{plan.split_cutoff}",
        lambda: make_split(Dataset(Path(plan.dataset_path)), cutoff=plan.split_cutoff),
    )


def _position_labels(
    cache: TeacherCache, config: TeacherConfig, split: Split, users: np.ndarray
) -> pa.Table:
    """The head's top-K items after every prefix of each user's train history (the last
    `position_last` prefixes when it is set)."""
    plan = cache.plan
    model = cache.adapted_head()
    seqs = split.train_sequences()
    chunk = [seqs[int(u)] for u in users]
    inputs, _ = windows(chunk, config.adapt.history_len, plan.n_items)
    owner, position = window_targets(chunk, config.adapt.history_len)
    keep = position >= 0
    if config.position_last:  # the last P prefixes of each history: positions n - P + 1 .. n
        last = np.array([len(s) - 1 for s in chunk], dtype=np.int64)
        keep &= position > np.where(owner >= 0, last[owner.clip(min=0)], 0) - config.position_last
    with torch.no_grad():
        item_vecs = model.item_vectors()
        states = model.states(torch.as_tensor(inputs), item_vecs)[torch.as_tensor(keep)]
        k = min(config.position_top_k, plan.n_items)
        top = torch.topk(states @ item_vecs.T, k, dim=-1)  # (N, K)
    return _label_table(
        users[owner[keep]],
        position[keep],
        list(top.indices.numpy()),
        list(top.values.numpy()),
    )


def commit(cache_dir: Path, infos: list[ShardInfo]) -> dict:
    _SHARED.clear()  # every shard is written: what they shared is not needed any more
    crash_point("teacher.before_manifest")
    plan = TeacherPlan.load(cache_dir)
    expected = {s[0] for s in plan.shards}
    got = {i.key for i in infos}
    if got != expected:
        raise TeacherError(
            f"cannot commit teacher cache {cache_dir}: shards missing {sorted(expected - got)[:5]}"
        )
    return plan.store.commit(infos, meta={"fingerprint": plan.fingerprint})


def repair(cache_dir: Path, *, work_dir: Path) -> list[str]:
    """Recompute committed shards that are missing, truncated or altered; returns their keys."""
    store = TeacherPlan.load(cache_dir).store
    shards = store.shards()
    bad = [s for s in shards if store.problem(s)]
    if not bad:
        return []
    for s in bad:
        log.warning("teacher shard %s: %s; recomputing it", s.file, store.problem(s))
        (store.root / s.file).unlink(missing_ok=True)
    fixed = {s.key: score_shard(cache_dir, s.key, work_dir=work_dir) for s in bad}
    commit(cache_dir, [fixed.get(s.key, s) for s in shards])
    return sorted(fixed)


def is_complete(cache_dir: Path) -> bool:
    return TeacherCache(cache_dir).is_complete()
