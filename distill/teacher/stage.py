"""The teacher stage, as plain functions the Prefect flow (and the CLI) call.

prepare():     texts -> LM embeddings (once per text hash) -> adapted head -> cache dir + plan
score_shard(): one user range -> soft labels written as one shard (skipped if already done)
commit():      the manifest, written last

Cache: <work>/cache/teacher/<fingerprint>/ with plan.json, texts (items_texts/users_texts.parquet),
items.parquet / users.parquet (index, text_hash, embedding, vector), report.json and
soft_labels/ (the shard store). The fingerprint covers everything that changes outputs: model
weights, dataset version and split, templates, adaptation config and adapted weights, tau, pairs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from distill.evaluate import Scorer, evaluate
from distill.sasrec import window_targets, windows
from distill.teacher import adapt
from distill.teacher.base import (
    TeacherConfig,
    TeacherError,
    check_finite,
    count_params,
    weights_hash,
)
from distill.texts import item_texts, user_texts
from distill.train import available_cores, config_hash, load_weights, save_weights
from storage.atomic import atomic_write_json, read_json, sha256_file, write_parquet
from storage.datasets import Dataset
from storage.embeddings import EmbeddingCache, embedding_column, embedding_matrix
from storage.faults import crash_point
from storage.shards import ShardInfo, ShardStore
from storage.split import Split
from storage.workdir import WorkDir

log = logging.getLogger(__name__)
_TEACHERS: dict[str, object] = {}  # one loaded model per process (Dask workers reuse it)


@dataclass(frozen=True)
class TeacherPlan:
    fingerprint: str
    cache_dir: str
    config: dict
    model_path: str
    dataset_path: str
    split_cutoff: int | None
    n_users: int
    n_items: int
    shards: list[tuple[str, int, int]]  # (key, first user, end user)
    adapter_path: str | None = None  # the adapted head's weights (None: zero-shot or causal)

    @property
    def store(self) -> ShardStore:
        return ShardStore(Path(self.cache_dir) / "soft_labels")

    @classmethod
    def load(cls, cache_dir: Path) -> TeacherPlan:
        """The plan in `cache_dir`. Paths it recorded inside its work dir are re-rooted on the
        work dir it is read from, so a moved or copied work dir reads and writes its own files
        (never the folder it was copied from)."""
        cache_dir = Path(cache_dir).absolute()
        data = read_json(cache_dir / "plan.json")
        data["shards"] = [tuple(s) for s in data["shards"]]
        old_root, new_root = Path(data["cache_dir"]).parents[2], cache_dir.parents[2]
        for name in ("dataset_path", "adapter_path"):
            if data.get(name) and Path(data[name]).is_relative_to(old_root):
                data[name] = str(new_root / Path(data[name]).relative_to(old_root))
        data["cache_dir"] = str(cache_dir)
        return cls(**data)


def load_teacher(config: TeacherConfig, work_dir: Path):
    """The LM teacher for `config` (memoised per process; weights load lazily on first use)."""
    key = config_hash(config.model_dump(mode="json"), str(work_dir))
    if key not in _TEACHERS:
        if config.kind == "embedding":
            from distill.teacher.encoder import EncoderTeacher

            _TEACHERS[key] = EncoderTeacher(config)
        else:
            from distill.teacher.causal import CausalLMTeacher

            _TEACHERS[key] = CausalLMTeacher(config, cache_root=WorkDir(work_dir).models)
    return _TEACHERS[key]


def _model_key(teacher, config: TeacherConfig) -> str:
    digest = weights_hash(teacher.path)[:16]
    return f"{config.kind}-{digest}-{config.dtype}-{config.max_length}"


def _vectors_table(
    index_name: str, texts: pl.DataFrame, emb: np.ndarray, vectors: dict[str, np.ndarray]
) -> pa.Table:
    return pa.table(
        {
            index_name: pa.array(texts.get_column(index_name).to_numpy(), pa.int32()),
            "text_hash": pa.array(texts.get_column("text_hash").to_list(), pa.string()),
            "embedding": embedding_column(emb),
            **{name: embedding_column(v) for name, v in vectors.items()},
        }
    )


def read_vectors(cache_dir: Path, which: str, column: str = "vector") -> np.ndarray:
    """(N, D) float32 from items.parquet / users.parquet of a teacher cache. Users have `vector`
    (read from the train items: what soft labels and validation use) and `test_vector` (train +
    validation items: the test input under the standard protocol)."""
    return embedding_matrix(
        pq.read_table(Path(cache_dir) / f"{which}.parquet", columns=[column]).column(column)
    )


def prepare(
    config: TeacherConfig,
    dataset: Dataset,
    split: Split,
    *,
    work_dir: Path,
    stats: dict | None = None,
) -> TeacherPlan:
    """Texts, embeddings and adaptation; writes the cache dir and plan.json. Idempotent."""
    stats = stats if stats is not None else {}
    teacher = load_teacher(config, work_dir)
    items = dataset.items()
    titles = items.get_column("title").to_list()
    seqs = split.train_sequences()
    itexts = item_texts(items, config.texts)
    utexts = user_texts(
        dataset.users(), seqs, titles, config.texts, count_tokens=teacher.count_tokens
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

    base = config_hash(
        model_key,
        dataset.version,
        split.name,
        config.texts.model_dump(),
        config.adapt.model_dump(),
        config.kind,
    )
    adapted = config.adapt.mode != "none" and config.kind == "embedding"
    adapter_dir = WorkDir(work_dir).adapters / base[:20]
    model = None
    if adapted:
        model = _teacher_model(teacher, config, split, itexts["text"].to_list(), item_emb)
        if not (adapter_dir / "adapter.safetensors").exists():
            stats["adapt_seconds"] = _train_adapter(model, config, split, adapter_dir)
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
    cache_dir = WorkDir(work_dir).teachers / fingerprint
    step = config.users_per_shard
    plan = TeacherPlan(
        fingerprint=fingerprint,
        cache_dir=str(cache_dir),
        config=config.model_dump(mode="json"),
        model_path=str(teacher.path),
        dataset_path=str(dataset.path),
        split_cutoff=None if split.name == "loo" else int(split.name.split("-", 1)[1]),
        n_users=split.n_users,
        n_items=split.n_items,
        shards=[
            (f"{s:06d}", s, min(s + step, split.n_users)) for s in range(0, split.n_users, step)
        ],
        adapter_path=str(adapter_dir / "adapter.safetensors") if adapted else None,
    )
    if (cache_dir / "plan.json").exists():
        return plan
    head_params = count_params(adapter_dir / "adapter.safetensors") if model is not None else 0
    report: dict = {
        "fingerprint": fingerprint,
        "model_key": model_key,
        "params": {"lm": count_params(teacher.path), "head": head_params},
        "adapt_seconds": read_json(adapter_dir / "training.json")["seconds"] if model else 0.0,
        "encode_seconds": stats.get("encode_seconds", 0.0),
        "zero_shot": {
            "test": evaluate(lambda u, f: torch.as_tensor(user_emb[u] @ item_emb.T), split).metrics
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
            "test": evaluate(vector_scorer(user_vec, item_vec), split).metrics,
        }
    write_parquet(cache_dir / "items_texts.parquet", itexts.to_arrow())
    write_parquet(cache_dir / "users_texts.parquet", utexts.to_arrow())
    write_parquet(
        cache_dir / "items.parquet",
        _vectors_table("item_idx", itexts, item_emb, {"vector": item_vec}),
    )
    write_parquet(
        cache_dir / "users.parquet", _vectors_table("user_idx", utexts, user_emb, user_vec)
    )
    atomic_write_json(cache_dir / "report.json", report)
    atomic_write_json(cache_dir / "plan.json", asdict(plan))  # last: marks prepare done
    return plan


def _teacher_model(
    teacher, config: TeacherConfig, split: Split, texts: list[str], item_emb: np.ndarray
) -> adapt.AdaptedTeacher:
    """The head on a frozen (cached) or partly trainable (top layers / LoRA) LM."""
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


def vector_scorer(user_vec: dict[str, np.ndarray], item_vec: np.ndarray) -> Scorer:
    """Scores from cached teacher vectors: `vector` for validation, `test_vector` for test."""
    column = {"valid": "vector", "test": "test_vector"}
    return lambda users, fold: torch.as_tensor(user_vec[column[fold]][users] @ item_vec.T)


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
                    model.user_vectors(hist[i : i + 512], item_vec)
                    for i in range(0, split.n_users, 512)
                ]
            ).numpy()
    return item_emb, item_vec.numpy(), user_vec


def candidates(
    scores: np.ndarray,
    train_rows: list[np.ndarray],
    top_k: int,
    n_random: int,
    seed: int,
    users: np.ndarray,
) -> list[np.ndarray]:
    """Per user: top-K by teacher score + the user's train positives + K' random negatives."""
    out = []
    n_items = scores.shape[1]
    for row, user in enumerate(users):
        top = np.argpartition(-scores[row], min(top_k, n_items - 1))[:top_k]
        rng = np.random.default_rng([seed, int(user)])
        rand = rng.choice(n_items, size=min(n_random, n_items), replace=False)
        out.append(np.unique(np.concatenate([top, train_rows[row], rand])))
    return out


def score_shard(cache_dir: Path, key: str, *, work_dir: Path) -> ShardInfo:
    """Compute and write one shard of soft labels; a shard already on disk is reused.

    Rows are (user_idx, position, item_idx, score). position -1: the label after the user's whole
    train history (every pair, or the candidates). position t >= 1: the adapted head's top
    `position_top_k` items after the first t train items, for students trained on every prefix.
    """
    plan = TeacherPlan.load(cache_dir)
    store = plan.store
    done = store.pending().get(key)
    if done is not None:
        return done
    _, start, end = next(s for s in plan.shards if s[0] == key)
    config = TeacherConfig.model_validate(plan.config)
    user_vec = read_vectors(cache_dir, "users")[start:end]
    item_vec = read_vectors(cache_dir, "items")
    users = np.arange(start, end)
    dense = user_vec @ item_vec.T  # (U, I) teacher scores
    split = None
    if config.pairs == "all":
        cands = [np.arange(plan.n_items)] * len(users)
        labels = list(dense.astype(np.float32))
    else:
        split = _plan_split(plan)
        train = split.train[start:end]
        train_rows = [
            train.indices[train.indptr[r] : train.indptr[r + 1]] for r in range(len(users))
        ]
        cands = candidates(
            dense,
            train_rows,
            config.candidates_top_k,
            config.candidates_random,
            config.adapt.seed,
            users,
        )
        labels = [dense[row, c].astype(np.float32) for row, c in enumerate(cands)]
    if config.kind == "causal" and config.pairs == "candidates":
        teacher = load_teacher(config, work_dir)
        utexts = pl.read_parquet(Path(cache_dir) / "users_texts.parquet").get_column("text")
        itexts = pl.read_parquet(Path(cache_dir) / "items_texts.parquet").get_column("text")
        item_list = itexts.to_list()
        labels = [
            teacher.score_shared(utexts[int(u)], [item_list[i] for i in c])
            for u, c in zip(users, cands, strict=True)
        ]
    parts = [_label_table(users, np.full(len(users), -1), cands, labels)]
    if plan.adapter_path and config.position_top_k:
        split = split or _plan_split(plan)
        parts.append(_position_labels(plan, config, split, users))
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
    from storage.split import make_split

    return make_split(Dataset(Path(plan.dataset_path)), cutoff=plan.split_cutoff)


def _position_labels(
    plan: TeacherPlan, config: TeacherConfig, split: Split, users: np.ndarray
) -> pa.Table:
    """The head's top-K items after every prefix of each user's train history."""
    model = _adapted_head(plan, config)
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


def head_user_vectors(plan: TeacherPlan, split: Split, fold: str):
    """(user indices -> (B, D) head user vectors from the fold's input, item vectors (I, D)):
    the adapted teacher as it would serve, on the cached LM item embeddings."""
    config = TeacherConfig.model_validate(plan.config)
    model = _adapted_head(plan, config)
    hist = torch.as_tensor(adapt.history_matrix(split, config.adapt.history_len, fold))
    with torch.no_grad():
        item_vecs = model.item_vectors()
    return (lambda users: model.user_vectors(hist[users], item_vecs)), item_vecs.numpy()


def head_state(cache_dir: Path, k: int, *, fold_text: bool) -> dict[str, torch.Tensor]:
    """Head k (mod the number of heads) of an adapted teacher as a plain SASRec state dict, to
    initialise a student of the same shape. With `fold_text` its item table becomes the head's
    whole item vectors (ID embedding + projected LM embedding, computed once), so a student with
    ID embeddings only starts as that head exactly and serves at a plain SASRec's cost."""
    plan = TeacherPlan.load(cache_dir)
    if plan.adapter_path is None:
        raise TeacherError(
            f"teacher cache {cache_dir} has no adapted head to start a student from: set "
            "teacher.adapt.mode (not none) or distill.init: random"
        )
    model = _adapted_head(plan, TeacherConfig.model_validate(plan.config))
    head = model.heads[k % len(model.heads)]
    state = {n: v.detach().clone() for n, v in head.state_dict().items()}
    if fold_text:
        with torch.no_grad():
            state["item_emb.weight"] = head.item_vectors(model.text()).detach().clone()
        state = {n: v for n, v in state.items() if not n.startswith("text.")}
    return state


def _adapted_head(plan: TeacherPlan, config: TeacherConfig) -> adapt.AdaptedTeacher:
    """The adapted head on the cached item embeddings (memoised per process)."""
    key = f"head:{plan.adapter_path}"
    if key not in _TEACHERS:
        item_emb = read_vectors(Path(plan.cache_dir), "items", "embedding")
        model = adapt.build_teacher_model(
            plan.n_items, item_emb.shape[1], config.adapt, adapt.FrozenText(item_emb)
        )
        load_weights(model, Path(plan.adapter_path), strict=False)
        _TEACHERS[key] = model.eval()
    return _TEACHERS[key]


def commit(cache_dir: Path, infos: list[ShardInfo]) -> dict:
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
    return (Path(cache_dir) / "soft_labels" / "manifest.json").exists()


@dataclass
class TeacherRun:
    plan: TeacherPlan
    manifest: dict
    stats: dict


def run_teacher(
    config: TeacherConfig, dataset: Dataset, split: Split, *, work_dir: Path, progress: bool = True
) -> TeacherRun:
    """The whole teacher stage in this process (the Prefect flow runs shards as tasks instead)."""
    from tqdm.auto import tqdm

    teacher = load_teacher(config, work_dir)
    passes_before = teacher.forward_passes
    t0 = time.perf_counter()
    stats: dict = {}
    plan = prepare(config, dataset, split, work_dir=work_dir, stats=stats)
    cache_dir = Path(plan.cache_dir)
    if is_complete(cache_dir):
        stats["repaired"] = repair(cache_dir, work_dir=work_dir)
        manifest = plan.store.manifest()
        stats["reused"] = True
    else:
        t1 = time.perf_counter()
        infos = [
            score_shard(cache_dir, key, work_dir=work_dir)
            for key, _, _ in tqdm(plan.shards, desc="teacher shards", disable=not progress)
        ]
        manifest = commit(cache_dir, infos)
        stats["score_seconds"] = time.perf_counter() - t1
        stats["pairs_per_second"] = manifest["total_rows"] / max(stats["score_seconds"], 1e-9)
        stats["reused"] = False
    stats["forward_passes"] = teacher.forward_passes - passes_before
    stats["seconds"] = time.perf_counter() - t0
    return TeacherRun(plan=plan, manifest=manifest, stats=stats)
