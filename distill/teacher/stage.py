"""The teacher stage, as plain functions the Prefect flow (and the CLI) call.

prepare():     texts -> LM embeddings (once per text hash) -> adapted head -> cache dir + plan
score_shard(): one user range -> soft labels written as one shard (skipped if already done)
commit():      the manifest, written last

The cache folder and its files belong to `distill/teacher/cache.py` (TeacherCache); this module
writes it through that object. The fingerprint covers everything that changes outputs: model
weights, dataset version and split, templates, adaptation config and adapted weights, tau, pairs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
import torch
from torch import nn

from distill.evaluation.harness import evaluate, vector_scorer
from distill.nn.sasrec import window_targets, windows
from distill.teacher import adapt
from distill.teacher.base import (
    Teacher,
    TeacherConfig,
    TeacherError,
    check_finite,
    count_params,
    weights_hash,
)
from distill.teacher.cache import TeacherCache, TeacherPlan, cached_scorer, vectors_table
from distill.teacher.memo import PerProcess
from distill.teacher.warm import HeadsWarmStart, start_heads
from distill.texts import item_texts, user_texts
from distill.training.loop import available_cores, config_hash, load_weights, save_weights
from storage.atomic import atomic_write_json, read_json, sha256_file
from storage.datasets import Dataset
from storage.embeddings import EmbeddingCache
from storage.faults import crash_point
from storage.shards import ShardInfo
from storage.split import Split
from storage.workdir import WorkDir

log = logging.getLogger(__name__)
_TEACHERS: PerProcess[Teacher] = PerProcess(limit=2)  # loaded LMs (Dask workers reuse them)
_SHARED: PerProcess[Any] = PerProcess(limit=8)  # what shard tasks share: split, vectors, index


def load_teacher(config: TeacherConfig, work_dir: Path) -> Teacher:
    """The LM teacher for `config` (memoised per process; weights load lazily on first use)."""
    key = config_hash(config.model_dump(mode="json"), str(work_dir))
    return _TEACHERS.get(key, lambda: _new_teacher(config, work_dir))


def _new_teacher(config: TeacherConfig, work_dir: Path) -> Teacher:
    if config.kind == "embedding":
        from distill.teacher.encoder import EncoderTeacher

        return EncoderTeacher(config)
    from distill.teacher.causal import CausalLMTeacher

    return CausalLMTeacher(config, cache_root=WorkDir(work_dir).models)


def _model_key(teacher: Teacher, config: TeacherConfig) -> str:
    digest = weights_hash(teacher.path)[:16]
    return f"{config.kind}-{digest}-{config.dtype}-{config.max_length}"


@dataclass
class _Encoded:
    """The LM's view of the data: texts and their embeddings."""

    model_key: str
    item_texts: pl.DataFrame
    user_texts: pl.DataFrame
    item_emb: np.ndarray
    user_emb: np.ndarray


def prepare(
    config: TeacherConfig,
    dataset: Dataset,
    split: Split,
    *,
    work_dir: Path,
    stats: dict | None = None,
    warm: HeadsWarmStart | None = None,
) -> TeacherPlan:
    """Texts -> embeddings -> adaptation -> the cache folder (plan.json last). Idempotent.
    `warm`: the heads start from last night's (distill/teacher/warm.py) and stop after
    `warm.patience` epochs without gain."""
    stats = stats if stats is not None else {}
    teacher = load_teacher(config, work_dir)
    enc = _encode(teacher, config, dataset, split, work_dir, stats)
    base = config_hash(
        enc.model_key,
        dataset.version,
        split.name,
        config.texts.model_dump(),
        config.adapt.model_dump(),
        config.kind,
    )
    adapted = config.adapt.mode != "none" and config.kind == "embedding"
    if adapted and warm is not None:  # a warm-started head is another head: its own folder
        base = config_hash(base, "warm-start", warm.fingerprint, warm.patience)
    adapter_dir = WorkDir(work_dir).adapters / base[:20]
    model = None
    if adapted:
        model = _teacher_model(
            teacher, config, split, enc.item_texts["text"].to_list(), enc.item_emb
        )
        if not (adapter_dir / "adapter.safetensors").exists():
            training = config
            if warm is not None:
                ids = dataset.items().get_column("item_id").to_list()
                carried = start_heads(model, warm, ids)
                stats["warm_start"] = {"from": warm.fingerprint, "items_carried": carried}
                if carried:
                    adapt_cfg = config.adapt.model_copy(update={"patience": warm.patience})
                    training = config.model_copy(update={"adapt": adapt_cfg})
            stats["adapt_seconds"] = _train_adapter(model, training, split, adapter_dir)
    adapter_hash = sha256_file(adapter_dir / "adapter.safetensors") if adapted else "none"
    fingerprint = config_hash(
        base,
        adapter_hash,
        config.tau,
        config.pairs,
        config.candidates_top_k,
        config.candidates_random,
        config.users_per_shard,
        config.position_top_k,
    )[:20]
    cache = TeacherCache(WorkDir(work_dir).teachers / fingerprint)
    adapter = adapter_dir if adapted else None
    plan = _plan(config, teacher, dataset, split, cache, adapter, work_dir)
    if not cache.is_prepared():
        _write_cache(cache, plan, config, split, enc, model, adapter_dir, stats, teacher.path)
    return plan


def _encode(
    teacher: Teacher,
    config: TeacherConfig,
    dataset: Dataset,
    split: Split,
    work_dir: Path,
    stats: dict,
) -> _Encoded:
    """Item and user texts, embedded by the LM (only texts not in the embedding cache)."""
    items = dataset.items()
    titles = items.get_column("title").to_list()
    itexts = item_texts(items, config.texts)
    utexts = user_texts(
        dataset.users(),
        split.train_sequences(),
        titles,
        config.texts,
        count_tokens=teacher.count_tokens,
    )
    model_key = _model_key(teacher, config)
    cache = EmbeddingCache(WorkDir(work_dir).embeddings, model_key)
    t0 = time.perf_counter()
    item_emb, n_items_enc = cache.get_or_encode(
        itexts["text_hash"].to_list(), itexts["text"].to_list(), teacher.encode
    )
    user_emb, n_users_enc = cache.get_or_encode(
        utexts["text_hash"].to_list(), utexts["text"].to_list(), teacher.encode
    )
    stats.update(
        item_texts_encoded=n_items_enc,
        user_texts_encoded=n_users_enc,
        encode_seconds=time.perf_counter() - t0,
    )
    if n_items_enc + n_users_enc:
        log.info(
            "encoded %d item and %d user texts in %.1fs (%.1f texts/s)",
            n_items_enc,
            n_users_enc,
            stats["encode_seconds"],
            (n_items_enc + n_users_enc) / max(stats["encode_seconds"], 1e-9),
        )
    return _Encoded(model_key, itexts, utexts, item_emb, user_emb)


def _plan(
    config: TeacherConfig,
    teacher: Teacher,
    dataset: Dataset,
    split: Split,
    cache: TeacherCache,
    adapter_dir: Path | None,
    work_dir: Path,
) -> TeacherPlan:
    step = config.users_per_shard
    return TeacherPlan(
        fingerprint=cache.folder.name,
        cache_dir=str(cache.folder),
        config=config.model_dump(mode="json"),
        model_path=str(teacher.path),
        dataset_path=str(dataset.path),
        split_cutoff=split.cutoff,
        n_users=split.n_users,
        n_items=split.n_items,
        shards=[
            (f"{s:06d}", s, min(s + step, split.n_users)) for s in range(0, split.n_users, step)
        ],
        adapter_path=None if adapter_dir is None else str(adapter_dir / "adapter.safetensors"),
        work_dir=str(Path(work_dir).absolute()),
    )


def _write_cache(
    cache: TeacherCache,
    plan: TeacherPlan,
    config: TeacherConfig,
    split: Split,
    enc: _Encoded,
    model: adapt.AdaptedTeacher | None,
    adapter_dir: Path,
    stats: dict,
    lm_path: Path,
) -> None:
    """The teacher's vectors (zero-shot, or from the adapted head), its report, texts and
    candidate index; plan.json last."""
    item_emb, user_emb = enc.item_emb, enc.user_emb
    head_params = count_params(adapter_dir / "adapter.safetensors") if model is not None else 0
    report: dict = {
        "fingerprint": plan.fingerprint,
        "model_key": enc.model_key,
        "params": {"lm": count_params(lm_path), "head": head_params},
        "adapt_seconds": read_json(adapter_dir / "training.json")["seconds"] if model else 0.0,
        "encode_seconds": stats.get("encode_seconds", 0.0),
        "zero_shot": {
            "test": evaluate(vector_scorer(lambda u, f: user_emb[u], item_emb), split).metrics
        },
    }
    if model is None:
        item_vec, user_vec = item_emb, {"vector": user_emb / config.tau}
        user_vec["test_vector"] = user_vec["vector"]  # the profile text names train items only
    else:
        load_weights(model, adapter_dir / "adapter.safetensors", strict=False)
        item_emb, item_vec, user_vec = _head_vectors(model, config, split, item_emb)
        report["adaptation"] = read_json(adapter_dir / "training.json")
        report["adapted"] = {
            "test": evaluate(cached_scorer(user_vec, item_vec), split).metrics,
        }
    cache.write_texts(enc.item_texts, enc.user_texts)
    items = vectors_table("item_idx", enc.item_texts, item_emb, {"vector": item_vec})
    cache.write_vectors("items", items)
    cache.write_vectors("users", vectors_table("user_idx", enc.user_texts, user_emb, user_vec))
    if config.pairs == "candidates":
        cache.candidate_index(item_vec)
    cache.write_report(report)
    cache.write_plan(plan)  # last: marks prepare done


def _teacher_model(
    teacher: Teacher, config: TeacherConfig, split: Split, texts: list[str], item_emb: np.ndarray
) -> adapt.AdaptedTeacher:
    """The head on a frozen (cached) or partly trainable (top layers / LoRA) LM."""
    text: nn.Module
    if config.adapt.mode == "frozen":
        text = adapt.FrozenText(item_emb)
    else:
        lm = adapt.make_trainable_lm(teacher.model, config.adapt)
        text = adapt.TrainableText(lm, texts, lambda t, m, g: teacher.embed(t, m, grad=g))
    return adapt.build_teacher_model(split.n_items, item_emb.shape[1], config.adapt, text)


def _train_adapter(
    model: adapt.AdaptedTeacher, config: TeacherConfig, split: Split, folder: Path
) -> float:
    """Train the heads (resuming from checkpoints) and save what they learned as safetensors.
    Returns the wall-clock seconds (heads may train side by side)."""
    t0 = time.perf_counter()
    results = adapt.train_heads(
        model, split, config.adapt, checkpoint_dir=folder / "ckpt", workers=available_cores()
    )
    wall = time.perf_counter() - t0
    valid = evaluate(adapt.scorer(model, split, config.adapt.history_len), split, fold="valid")
    atomic_write_json(
        folder / "training.json",
        {
            "mode": config.adapt.mode,
            "val_ndcg@10": valid.primary,  # the whole teacher (the mean of its heads)
            "seconds": wall,
            "heads": [
                {
                    "seed": config.adapt.seed + k,
                    "best_epoch": r.best_epoch,
                    "val_ndcg@10": r.best_score,
                    "seconds": r.seconds,
                    "history": r.history,
                }
                for k, r in enumerate(results)
            ],
        },
    )
    save_weights(model, folder / "adapter.safetensors", model.trainable_state())  # last
    return wall


def _head_vectors(
    model: adapt.AdaptedTeacher, config: TeacherConfig, split: Split, item_emb: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(item embeddings, item vectors, user vectors per input) from the adapted teacher."""
    model.eval()
    user_vec = {}
    with torch.no_grad():
        if config.adapt.mode != "frozen":
            item_emb = model.text().numpy()  # the adapted LM's embeddings
        item_vec = model.item_vectors()
        for column, fold in (("vector", "valid"), ("test_vector", "test")):
            hist = torch.as_tensor(adapt.history_matrix(split, config.adapt.history_len, fold))
            user_vec[column] = torch.cat(
                [
                    model.history_vectors(hist[i : i + 512], item_vec)
                    for i in range(0, split.n_users, 512)
                ]
            ).numpy()
    return item_emb, item_vec.numpy(), user_vec


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
            config.adapt.seed,
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
    """The head's top-K items after every prefix of each user's train history."""
    plan = cache.plan
    model = cache.adapted_head()
    seqs = split.train_sequences()
    chunk = [seqs[int(u)] for u in users]
    inputs, _ = windows(chunk, config.adapt.history_len, plan.n_items)
    owner, position = window_targets(chunk, config.adapt.history_len)
    keep = position >= 0
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


@dataclass
class TeacherRun:
    """What one teacher stage did, wherever it ran (here, or as the Prefect flow's tasks)."""

    plan: TeacherPlan
    manifest: dict
    stats: dict  # prepare's (texts encoded, seconds) + reused/repaired or scoring speed

    @property
    def cache(self) -> TeacherCache:
        """The committed cache the student stage reads."""
        return TeacherCache(Path(self.plan.cache_dir))

    @property
    def fingerprint(self) -> str:
        return self.plan.fingerprint

    @property
    def pairs(self) -> int:
        return int(self.manifest.get("total_rows", 0))

    @property
    def reused(self) -> bool:
        """True when the cache was already complete: no teacher work was done."""
        return bool(self.stats.get("reused", False))

    @property
    def texts_encoded(self) -> int:
        """Item and user texts the LM encoded in this run (0 when every text was cached)."""
        stats = self.stats
        return int(stats.get("item_texts_encoded", 0) + stats.get("user_texts_encoded", 0))

    @property
    def warm_start(self) -> dict | None:
        """Where the heads started from (`HeadsWarmStart.summary()`), None when from scratch."""
        return self.stats.get("warm_start")

    def summary(self) -> dict:
        """The run as plain JSON, for `kdrec teacher run` and the nightly record."""
        return {
            "cache_dir": self.plan.cache_dir,
            "fingerprint": self.plan.fingerprint,
            "pairs": self.pairs,
            **self.stats,
        }


class TeacherSteps(Protocol):
    """How the teacher stage's steps run: in this process (`LocalSteps`), or as the Prefect
    flow's tasks (pipelines/teacher_flow.py). `orchestrate` is the one control flow over them."""

    def prepare(self) -> tuple[TeacherPlan, dict]:
        """Texts, LM embeddings, the adapted head and the plan; with prepare's stats."""
        ...

    def repair(self, cache_dir: Path) -> list[str]: ...

    def score(self, cache_dir: Path, keys: list[str]) -> Iterator[ShardInfo]:
        """Score every shard of `keys`, yielding each as it completes (in any order)."""
        ...

    def commit(self, cache_dir: Path, infos: list[ShardInfo]) -> dict: ...


@dataclass(frozen=True)
class LocalSteps:
    """The teacher stage's steps in this process, one shard after the other."""

    config: TeacherConfig
    dataset: Dataset
    split: Split
    work_dir: Path
    warm: HeadsWarmStart | None = None

    def prepare(self) -> tuple[TeacherPlan, dict]:
        stats: dict = {}
        plan = prepare(
            self.config,
            self.dataset,
            self.split,
            work_dir=self.work_dir,
            stats=stats,
            warm=self.warm,
        )
        return plan, stats

    def repair(self, cache_dir: Path) -> list[str]:
        return repair(cache_dir, work_dir=self.work_dir)

    def score(self, cache_dir: Path, keys: list[str]) -> Iterator[ShardInfo]:
        for key in keys:
            yield score_shard(cache_dir, key, work_dir=self.work_dir)

    def commit(self, cache_dir: Path, infos: list[ShardInfo]) -> dict:
        return commit(cache_dir, infos)


def orchestrate(
    steps: TeacherSteps,
    *,
    progress: bool = True,
    on_shard: Callable[[int, int], None] | None = None,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> TeacherRun:
    """The teacher stage, wherever its steps run: prepare; a complete cache is verified (damaged
    shards recomputed) and reused; otherwise every shard is scored, then committed at once.
    `on_shard(done, total)` before the first shard and after each (the flow's UI progress)."""
    from tqdm.auto import tqdm

    out = logger or log
    t0 = time.perf_counter()
    plan, stats = steps.prepare()
    cache_dir = Path(plan.cache_dir)
    if is_complete(cache_dir):
        repaired = steps.repair(cache_dir)
        out.info(
            "teacher cache %s is complete: no teacher work%s",
            plan.fingerprint,
            f" (recomputed damaged shards {repaired})" if repaired else "",
        )
        stats.update(reused=True, repaired=repaired, seconds=time.perf_counter() - t0)
        return TeacherRun(plan, plan.store.manifest(), stats)
    t1 = time.perf_counter()
    infos: list[ShardInfo] = []
    bar = tqdm(total=len(plan.shards), desc="teacher shards", disable=None if progress else True)
    if on_shard is not None:
        on_shard(0, len(plan.shards))
    for info in steps.score(cache_dir, [s[0] for s in plan.shards]):
        infos.append(info)
        bar.update(1)
        if on_shard is not None:
            on_shard(len(infos), len(plan.shards))
    bar.close()
    manifest = steps.commit(cache_dir, infos)
    score_s = time.perf_counter() - t1
    pairs_per_s = manifest["total_rows"] / max(score_s, 1e-9)
    encoded = stats.get("item_texts_encoded", 0) + stats.get("user_texts_encoded", 0)
    out.info(
        "teacher %s: %d texts encoded (%.1f texts/s), %d pairs scored in %.1fs "
        "(%.0f pairs/s), total %.1fs",
        plan.fingerprint,
        encoded,
        encoded / max(stats.get("encode_seconds", 0.0), 1e-9),
        manifest["total_rows"],
        score_s,
        pairs_per_s,
        time.perf_counter() - t0,
    )
    stats.update(
        reused=False,
        score_seconds=score_s,
        pairs_per_second=pairs_per_s,
        seconds=time.perf_counter() - t0,
    )
    return TeacherRun(plan, manifest, stats)


def run_teacher(
    config: TeacherConfig,
    dataset: Dataset,
    split: Split,
    *,
    work_dir: Path,
    progress: bool = True,
    warm: HeadsWarmStart | None = None,
) -> TeacherRun:
    """The whole teacher stage in this process (the Prefect flow runs shards as tasks instead)."""
    teacher = load_teacher(config, work_dir)
    passes_before = teacher.forward_passes
    run = orchestrate(LocalSteps(config, dataset, split, work_dir, warm), progress=progress)
    run.stats["forward_passes"] = teacher.forward_passes - passes_before
    return run
