"""The teacher stage's preparation: the LM (loaded once per process), texts -> LM embeddings
(once per text hash) -> the adapted SASRec heads -> the cache folder and its plan.

The cache folder and its files belong to `distill/teacher/cache.py` (TeacherCache); this module
writes it through that object. The fingerprint covers everything that changes outputs: model
weights, dataset version and split, templates, adaptation config and adapted weights, tau, pairs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

from distill.evaluation.harness import evaluate, vector_scorer
from distill.teacher import adapt
from distill.teacher.base import (
    Teacher,
    TeacherConfig,
    count_params,
    weights_hash,
)
from distill.teacher.cache import (
    AdapterDir,
    TeacherCache,
    TeacherPlan,
    cached_scorer,
    vectors_table,
)
from distill.teacher.memo import PerProcess
from distill.teacher.warm import HeadsWarmStart, start_heads
from distill.texts import item_texts, user_texts
from distill.training.loop import available_cores, config_hash, load_weights, save_weights
from storage.atomic import atomic_write_json, read_json, sha256_file
from storage.datasets import Dataset
from storage.embeddings import EmbeddingCache
from storage.split import Split
from storage.workdir import WorkDir

log = logging.getLogger(__name__)
_TEACHERS: PerProcess[Teacher] = PerProcess(limit=2)  # loaded LMs (Dask workers reuse them)


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
        config.adapt.fingerprint(),
        config.kind,
    )
    adapted = config.adapt.mode != "none" and config.kind == "embedding"
    if adapted and warm is not None:  # a warm-started head is another head: its own folder
        base = config_hash(base, "warm-start", warm.fingerprint, warm.patience)
    adapter_dir = AdapterDir.of(work_dir, base)
    model = None
    if adapted:
        model = _teacher_model(
            teacher, config, split, enc.item_texts["text"].to_list(), enc.item_emb
        )
        if not adapter_dir.is_trained():
            training = config
            if warm is not None:
                ids = dataset.items().get_column("item_id").to_list()
                carried = start_heads(model, warm, ids)
                stats["warm_start"] = {"from": warm.fingerprint, "items_carried": carried}
                if carried:
                    loop = config.adapt.loop.model_copy(update={"patience": warm.patience})
                    adapt_cfg = config.adapt.model_copy(update={"loop": loop})
                    training = config.model_copy(update={"adapt": adapt_cfg})
            stats["adapt_seconds"] = _train_adapter(model, training, split, adapter_dir)
    adapter_hash = sha256_file(adapter_dir.weights) if adapted else "none"
    fingerprint = config_hash(
        base,
        adapter_hash,
        config.tau,
        config.pairs,
        config.candidates_top_k,
        config.candidates_random,
        config.users_per_shard,
        config.position_top_k,
        *([config.position_last] if config.position_last else []),  # caches before it: same key
    )[:20]
    cache = TeacherCache.of(work_dir, fingerprint)
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
    adapter_dir: AdapterDir | None,
    work_dir: Path,
) -> TeacherPlan:
    step = config.users_per_shard
    return TeacherPlan(
        fingerprint=cache.folder.name,
        cache_dir=str(cache.folder),
        config=config.model_dump(mode="json"),
        model_path=str(Path(teacher.path).absolute()),
        dataset_path=str(dataset.path),
        split_cutoff=split.cutoff,
        n_users=split.n_users,
        n_items=split.n_items,
        shards=[
            (f"{s:06d}", s, min(s + step, split.n_users)) for s in range(0, split.n_users, step)
        ],
        adapter_path=None if adapter_dir is None else str(adapter_dir.weights),
        work_dir=str(Path(work_dir).absolute()),
    )


def _write_cache(
    cache: TeacherCache,
    plan: TeacherPlan,
    config: TeacherConfig,
    split: Split,
    enc: _Encoded,
    model: adapt.AdaptedTeacher | None,
    adapter_dir: AdapterDir,
    stats: dict,
    lm_path: Path,
) -> None:
    """The teacher's vectors (zero-shot, or from the adapted head), its report, texts and
    candidate index; plan.json last."""
    item_emb, user_emb = enc.item_emb, enc.user_emb
    head_params = count_params(adapter_dir.weights) if model is not None else 0
    report: dict = {
        "fingerprint": plan.fingerprint,
        "model_key": enc.model_key,
        "params": {"lm": count_params(lm_path), "head": head_params},
        "adapt_seconds": read_json(adapter_dir.training)["seconds"] if model else 0.0,
        "encode_seconds": stats.get("encode_seconds", 0.0),
        "zero_shot": {
            "test": evaluate(vector_scorer(lambda u, f: user_emb[u], item_emb), split).metrics
        },
    }
    if model is None:
        item_vec, user_vec = item_emb, {"vector": user_emb / config.tau}
        user_vec["test_vector"] = user_vec["vector"]  # the profile text names train items only
    else:
        load_weights(model, adapter_dir.weights, strict=False)
        item_emb, item_vec, user_vec = _head_vectors(model, config, split, item_emb)
        report["adaptation"] = read_json(adapter_dir.training)
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
    model: adapt.AdaptedTeacher, config: TeacherConfig, split: Split, folder: AdapterDir
) -> float:
    """Train the heads (resuming from checkpoints) and save what they learned as safetensors.
    Returns the wall-clock seconds (heads may train side by side)."""
    t0 = time.perf_counter()
    results = adapt.train_heads(
        model, split, config.adapt, checkpoint_dir=folder.checkpoints, workers=available_cores()
    )
    wall = time.perf_counter() - t0
    valid = evaluate(adapt.scorer(model, split, config.adapt.history_len), split, fold="valid")
    atomic_write_json(
        folder.training,
        {
            "mode": config.adapt.mode,
            "val_ndcg@10": valid.primary,  # the whole teacher (the mean of its heads)
            "seconds": wall,
            "heads": [
                {
                    "seed": config.adapt.loop.seed + k,
                    "best_epoch": r.best_epoch,
                    "val_ndcg@10": r.best_score,
                    "seconds": r.seconds,
                    "history": r.history,
                }
                for k, r in enumerate(results)
            ],
        },
    )
    save_weights(model, folder.weights, model.trainable_state())  # last
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
