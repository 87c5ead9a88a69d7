"""The student stage as plain functions: train students, evaluate every model, build the bundle.

The Prefect student flow and the CLI call these; nothing here knows about Prefect.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import torch
from safetensors.torch import save
from torch import nn

from distill import index as faiss_index
from distill.baselines import run_baselines
from distill.evaluate import EvalResult, evaluate
from distill.layers import left_padded
from distill.report import ModelRow, bars, build_report
from distill.soft_labels import SoftLabels
from distill.student import StudentConfig, n_params
from distill.student.fit import DistillConfig, UserData, student_scorer, train_student
from distill.teacher.stage import read_vectors
from distill.train import LoopConfig, TrainResult, config_hash
from storage.atomic import parquet_bytes, read_json
from storage.datasets import Dataset
from storage.embeddings import embedding_column
from storage.split import Split


@dataclass
class StudentRun:
    model: nn.Module
    config: StudentConfig
    kd: DistillConfig
    seed: int
    train: TrainResult
    test: EvalResult
    valid: dict[str, float]
    users_per_second: float


def fit_and_evaluate(
    split: Split,
    config: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    *,
    soft_labels: SoftLabels | None,
    text_emb: np.ndarray | None,
    checkpoint_dir: Path | None = None,
) -> StudentRun:
    model, result = train_student(
        split,
        config,
        kd,
        loop,
        soft_labels=soft_labels,
        text_emb=text_emb,
        checkpoint_dir=checkpoint_dir,
    )
    data = UserData(split, config.history_len)
    valid = evaluate(student_scorer(model, data), split, fold="valid").metrics
    t0 = time.perf_counter()
    test = evaluate(student_scorer(model, data), split)
    speed = len(test.users) / max(time.perf_counter() - t0, 1e-9)
    return StudentRun(model, config, kd, loop.seed, result, test, valid, speed)


def teacher_row(soft_labels: SoftLabels, split: Split, teacher_cache: Path) -> ModelRow:
    """The teacher as a recommender; params = LM + head, train time = adaptation."""
    info = read_json(Path(teacher_cache) / "report.json")
    params = sum(info.get("params", {}).values())
    seconds = float(info.get("adapt_seconds") or 0.0)
    t0 = time.perf_counter()
    result = evaluate(soft_labels.scorer(), split)
    speed = len(result.users) / max(time.perf_counter() - t0, 1e-9)
    return ModelRow("Teacher", "teacher", False, [result], params, [seconds], speed)


def baseline_rows(split: Split) -> list[ModelRow]:
    return [
        ModelRow(
            b.name, "baseline", False, [b.result], b.params, [b.train_seconds], b.users_per_second
        )
        for b in run_baselines(split)
    ]


def student_row(runs: list[StudentRun], name: str) -> ModelRow:
    return ModelRow(
        name,
        "student",
        runs[0].kd.alpha > 0,
        [r.test for r in runs],
        n_params(runs[0].model),
        [r.train.seconds for r in runs],
        float(np.mean([r.users_per_second for r in runs])),
        history=[r.train.history for r in runs],
    )


def checkpoint_dir(
    root: Path,
    dataset: Dataset,
    split: Split,
    teacher_fingerprint: str,
    student: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    seed: int,
) -> Path:
    """Checkpoints keyed by everything that shapes training: a re-run resumes or reuses them."""
    key = config_hash(
        dataset.version,
        split.name,
        teacher_fingerprint,
        student.model_dump(),
        kd.model_dump(),
        loop.model_dump(),
        seed,
    )
    return Path(root) / key[:20]


def quality(
    dataset: Dataset,
    split: Split,
    *,
    teacher_cache: Path,
    student: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    seeds: list[int],
    work_dir: Path,
    checkpoint_root: Path | None = None,
) -> tuple[dict, list[ModelRow], StudentRun]:
    """Every report row on the test fold; returns (report, rows, best distilled run)."""
    soft = SoftLabels(teacher_cache)
    text_emb = read_vectors(teacher_cache, "items", "embedding")
    rows = baseline_rows(split)
    rows.append(teacher_row(soft, split, teacher_cache))
    runs: dict[bool, list[StudentRun]] = {False: [], True: []}
    for seed in seeds:
        for distilled in (False, True):
            this_kd = kd if distilled else kd.model_copy(update={"alpha": 0.0})
            ckpt = None
            if checkpoint_root is not None:
                ckpt = checkpoint_dir(
                    checkpoint_root, dataset, split, soft.fingerprint, student, this_kd, loop, seed
                )
            runs[distilled].append(
                fit_and_evaluate(
                    split,
                    student,
                    this_kd,
                    loop.model_copy(update={"seed": seed}),
                    soft_labels=soft,  # both arms: the same shard batches; alpha=0 ignores it
                    text_emb=text_emb,
                    checkpoint_dir=ckpt,
                )
            )
    label = student.kind.replace("_", "-")
    rows.append(student_row(runs[False], f"Student {label} (no KD)"))
    rows.append(student_row(runs[True], f"Student {label} (KD {kd.loss})"))
    report = build_report(
        dataset=dataset.ref,
        split=split,
        seeds=seeds,
        rows=rows,
        extra={
            "teacher_fingerprint": soft.fingerprint,
            "student": student.model_dump(),
            "distill": kd.model_dump(),
            "loop": loop.model_dump(),
        },
    )
    best = max(runs[True], key=lambda r: r.valid["ndcg@10"])
    return report, rows, best


def finish_report(report: dict, cost_ratio: float | None) -> dict:
    if cost_ratio is not None:
        report["cost_ratio"] = cost_ratio
    report["bars"] = bars(report)
    return report


def serving_vectors(
    model: nn.Module,
    dataset: Dataset,
    history_len: int,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """User vectors from each user's whole known history (serving time), and the seen items."""
    inter = dataset.interactions().sort("user_idx", "timestamp", "item_idx")
    seqs: list[np.ndarray] = [np.empty(0, np.int64)] * dataset.n_users
    for (user,), group in inter.group_by(["user_idx"], maintain_order=True):
        seqs[int(user)] = group.get_column("item_idx").to_numpy().astype(np.int64)
    hist = torch.as_tensor(left_padded(seqs, history_len, dataset.n_items))
    model.eval()
    with torch.no_grad():
        item_vecs = model.item_vectors()
        users = torch.arange(dataset.n_users)
        vecs = torch.cat(
            [
                model.user_vectors(users[i : i + 1024], hist[i : i + 1024], item_vecs)
                for i in range(0, dataset.n_users, 1024)
            ]
        )
    return vecs.numpy(), seqs


def bundle_files(run: StudentRun, dataset: Dataset, report: dict) -> dict[str, bytes]:
    """The files of a publishable bundle (the registry adds manifest.json)."""
    model = run.model
    with torch.no_grad():
        item_vecs = model.item_vectors().detach().numpy()  # an ID-only tower is a Parameter
    user_vecs, seen = serving_vectors(model, dataset, run.config.history_len)
    index, recall = faiss_index.build_index(item_vecs, queries=user_vecs)
    items = dataset.items()
    popularity = np.bincount(
        dataset.interactions().get_column("item_idx").to_numpy(), minlength=dataset.n_items
    )
    items_table = pa.table(
        {
            "item_idx": pa.array(np.arange(dataset.n_items, dtype=np.int32)),
            "item_id": pa.array(items.get_column("item_id").to_list(), pa.string()),
            "title": pa.array(items.get_column("title").to_list(), pa.string()),
            "popularity": pa.array(popularity.astype(np.int64)),
            "vector": embedding_column(item_vecs),
        }
    )
    users = dataset.users()
    users_table = pa.table(
        {
            "user_idx": pa.array(np.arange(dataset.n_users, dtype=np.int32)),
            "user_id": pa.array(users.get_column("user_id").to_list(), pa.string()),
            "seen": pa.array([s.astype(np.int32).tolist() for s in seen], pa.list_(pa.int32())),
            "vector": embedding_column(user_vecs),
        }
    )
    config = {
        "student": run.config.model_dump(),
        "distill": run.kd.model_dump(),
        "seed": run.seed,
        "n_users": dataset.n_users,
        "n_items": dataset.n_items,
        "index": type(index).__name__,
        "index_recall@10": recall,
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return {
        "student.safetensors": save(state),
        "config.json": json.dumps(config, indent=2, sort_keys=True).encode(),
        "items.faiss": faiss_index.to_bytes(index),
        "items.parquet": parquet_bytes(items_table),
        "users.parquet": parquet_bytes(users_table),
        "report.json": json.dumps(report, indent=2, sort_keys=True, default=str).encode(),
    }


def cost_ratio(
    teacher_cache: Path,
    run: StudentRun,
    split: Split,
    *,
    work_dir: Path,
    n_users: int = 256,
    repeats: int = 3,
) -> dict:
    """Per-user scoring cost, teacher vs student, same machine, same users.

    Teacher (LM + head, from text): the causal teacher prompts the LM once per item; the
    embedding teacher runs the LM over the texts of the user's recent history items (what its
    head reads). The head alone, on cached item embeddings, costs about what a student does.
    Student: user vector + one FAISS search.
    """
    from distill.teacher.base import TeacherConfig
    from distill.teacher.stage import TeacherPlan, load_teacher

    plan = TeacherPlan.load(teacher_cache)
    config = TeacherConfig.model_validate(plan.config)
    teacher = load_teacher(config, work_dir)
    users = np.arange(min(n_users, split.n_users))
    item_texts = pl.read_parquet(Path(teacher_cache) / "items_texts.parquet").get_column("text")
    if teacher.kind == "causal":
        texts = pl.read_parquet(Path(teacher_cache) / "users_texts.parquet").get_column("text")
        sample = item_texts.head(20).to_list()
        t0 = time.perf_counter()
        teacher.score_shared(texts[0], sample)
        teacher_s = (time.perf_counter() - t0) * split.n_items / len(sample)
    else:
        seqs = split.train_sequences()
        lm_users = users[:32]  # the LM pass is slow: 32 users x up to 50 history texts
        teacher.encode(item_texts.head(4).to_list())  # warm-up (weights load)
        t0 = time.perf_counter()
        for u in lm_users:
            teacher.encode([item_texts[int(i)] for i in seqs[int(u)][-config.adapt.history_len :]])
        teacher_s = (time.perf_counter() - t0) / len(lm_users)
    data = UserData(split, run.config.history_len)
    with torch.no_grad():
        item_vecs = run.model.item_vectors()
    index, _ = faiss_index.build_index(item_vecs.detach().numpy())
    timings = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            u = torch.as_tensor(users)
            vecs = run.model.user_vectors(u, data.hist[u], item_vecs).numpy()
        index.search(np.ascontiguousarray(vecs), 10)
        timings.append((time.perf_counter() - t0) / len(users))
    student_s = min(timings)
    return {
        "teacher_seconds_per_user": teacher_s,
        "student_seconds_per_user": student_s,
        "ratio": teacher_s / student_s,
        "users": len(users),
    }
