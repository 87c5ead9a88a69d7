"""Lightweight students: the accuracy-cost frontier of the sequential student's shapes.

For every shape (width x transformer blocks) two models are trained per seed: the distilled
student (the run's teacher soft labels, starting from a random init, since a teacher head has the
default width) and the same shape without the teacher (alpha 0: the plain SASRec of that shape).
Each point records validation and test NDCG@10 (mean and std over seeds), parameters, the bytes of
its publishable bundle, training seconds, the p50 / p99 latency of one history request through the
serving path (`Recommender.recommend_history`: the user tower over a history, then a FAISS top-10
search; one thread, each request timed alone), and the same model served in int8 (the int8 user
tower and the SQ8 index: test NDCG@10, its paired loss against float32, latency); per shape, the
per-user paired test of distilled against plain on test.

`kdrec quality --frontier` (config key `frontier`) adds this section to the report;
`python -m bench frontier` records it as bench/results/frontier.json.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from distill import index as faiss_index
from distill.evaluation.harness import evaluate, vector_scorer
from distill.evaluation.stats import paired
from distill.serving.bundle import bundle_files
from distill.serving.recommend import Recommender
from distill.student.build import int8_tower, n_params
from distill.student.config import Shape, StudentConfig
from distill.student.fit import DistillConfig, UserData
from distill.student.jobs import TrainJob, plain_kd, train_job
from distill.student.run import StudentRun
from distill.training.loop import LoopConfig
from storage.datasets import Dataset
from storage.registry import Registry
from storage.split import Split

Key = tuple[int, int, bool]  # (width, blocks, distilled)


def jobs(
    dataset: Dataset,
    split: Split,
    fingerprint: str,
    sasrec: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    seeds: dict[Shape, int],
    checkpoint_root: Path | None,
) -> tuple[list[TrainJob], list[Key]]:
    """Every training of the frontier (shape x seed x with/without the teacher), with its key.
    Checkpoints are content-keyed under `checkpoint_root`, so an interrupted frontier resumes."""
    # from a random init, as the plain arm: both run to the same patience (train.patience)
    distilled = kd.model_copy(update={"init": "random", "patience": None})
    arms = {True: distilled, False: plain_kd(distilled)}
    out, keys = [], []
    for (dim, layers), n_seeds in seeds.items():
        student = sasrec.model_copy(update={"dim": dim, "n_layers": layers})
        for seed in range(n_seeds):
            for is_distilled, this_kd in arms.items():
                arm = "distilled" if is_distilled else "plain"
                job = train_job(
                    dataset,
                    split,
                    fingerprint,
                    student,
                    this_kd,
                    loop,
                    seed,
                    checkpoint_root,
                    name=f"{dim}x{layers} {arm}",
                )
                out.append(job)
                keys.append((dim, layers, is_distilled))
    return out, keys


def section(
    keys: Sequence[Key],
    runs: Sequence[StudentRun],
    dataset: Dataset,
    split: Split,
    latency_users: int = 300,
) -> dict:
    """The frontier's rows (one per shape and arm) and paired tests (one per shape)."""
    grouped: dict[Key, list[StudentRun]] = {}
    for key, run in zip(keys, runs, strict=True):
        grouped.setdefault(key, []).append(run)
    shapes = list(dict.fromkeys((dim, layers) for dim, layers, _ in keys))
    rows, tests = [], []
    for dim, layers in shapes:
        for distilled in (False, True):
            mine = grouped[(dim, layers, distilled)]
            rows.append(point(dim, layers, distilled, mine, dataset, split, latency_users))
        test = paired(
            [r.test for r in grouped[(dim, layers, True)]],
            [r.test for r in grouped[(dim, layers, False)]],
            names=("distilled", "plain"),
        )
        tests.append({"dim": dim, "n_layers": layers, **test.as_json()})
    return {"rows": with_ratios(rows), "tests": tests}


def point(
    dim: int,
    layers: int,
    distilled: bool,
    runs: list[StudentRun],
    dataset: Dataset,
    split: Split,
    latency_users: int,
) -> dict:
    test = [r.test.metrics["ndcg@10"] for r in runs]
    valid = [r.valid["ndcg@10"] for r in runs]
    return {
        "dim": dim,
        "n_layers": layers,
        "distilled": distilled,
        "seeds": len(runs),
        "valid_ndcg@10": float(np.mean(valid)),
        "valid_ndcg@10_std": float(np.std(valid)),
        "test_ndcg@10": float(np.mean(test)),
        "test_ndcg@10_std": float(np.std(test)),
        "test_hr@10": float(np.mean([r.test.metrics["hr@10"] for r in runs])),
        "params": n_params(runs[0].model),
        "train_seconds": float(np.mean([r.train.seconds for r in runs])),
        "best_epoch": float(np.mean([r.train.best_epoch for r in runs])),
        **latency(runs[0], dataset, split, latency_users),
        **int8_columns(runs, dataset, split, latency_users),
    }


def with_ratios(rows: list[dict], base: Key = (64, 2, False)) -> list[dict]:
    """Parameters, p50 latency and test NDCG@10 as ratios of the plain SASRec-64 (two blocks:
    the plain model the students compete with), when it is among the rows."""
    ref = next((r for r in rows if (r["dim"], r["n_layers"], r["distilled"]) == base), None)
    if ref is None:
        return rows
    return [
        {
            **r,
            "params_vs_sasrec64": r["params"] / ref["params"],
            "p50_vs_sasrec64": r["p50_ms"] / ref["p50_ms"],
            "test_vs_sasrec64": r["test_ndcg@10"] / ref["test_ndcg@10"],
        }
        for r in rows
    ]


def latency(
    run: StudentRun, dataset: Dataset, split: Split, n: int = 300, tower: str = "float32"
) -> dict:
    """p50 / p99 ms of one history request through the serving path, one thread; `tower`
    "int8" serves with the int8 user tower and the SQ8 index."""
    files = bundle_files(run, dataset, quantized=tower == "int8")
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp), "frontier")
        registry.publish(files, validation=dict(run.valid), force=True)
        index = "sq8" if tower == "int8" else "exact"
        rec = Recommender.load(Path(tmp), "frontier", index=index, tower=tower)
        ids = dataset.items().get_column("item_id").to_list()
        rng = np.random.default_rng(0)
        users = rng.choice(split.n_users, size=min(n, split.n_users), replace=False)
        seqs = split.train_sequences()
        histories = [[ids[i] for i in seqs[u][-50:]] for u in users]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with faiss_index.one_thread():
                for history in histories[:20]:  # warm-up
                    rec.recommend_history(history, k=10)
                ms = []
                for history in histories:
                    t0 = time.perf_counter()
                    rec.recommend_history(history, k=10)
                    ms.append((time.perf_counter() - t0) * 1000)
        finally:
            torch.set_num_threads(threads)
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "bundle_bytes": sum(len(b) for b in files.values()),
    }


def int8_quality(run: StudentRun, split: Split) -> dict:
    """Test NDCG@10 served in int8 end to end: the int8 user tower's vectors against the items
    as the SQ8 index decodes them (what its inner-product search ranks by)."""
    served = run.placement.served().detach().numpy()
    sq8 = faiss_index.build_sq8(np.ascontiguousarray(served))
    decoded = sq8.reconstruct_n(0, sq8.ntotal)
    tower = int8_tower(run.model)
    data = UserData(split, run.config.history_len)
    item_vecs = torch.as_tensor(served)

    def user_vectors(users: np.ndarray, fold: str) -> np.ndarray:
        u = torch.as_tensor(users)
        with torch.no_grad():
            return tower.user_vectors(u, data.hist[fold][u], item_vecs).numpy()

    result = evaluate(vector_scorer(user_vectors, decoded), split)
    return {"int8_test_ndcg@10": result.metrics["ndcg@10"], "int8_test": result}


def int8_columns(
    runs: list[StudentRun], dataset: Dataset, split: Split, latency_users: int = 300
) -> dict:
    """Quality (every seed) and latency (seed 0) served in int8: tower and index."""
    quality = [int8_quality(r, split) for r in runs]
    served = latency(runs[0], dataset, split, latency_users, tower="int8")
    loss = paired([q["int8_test"] for q in quality], [r.test for r in runs], names=("int8", "f32"))
    return {
        "int8_test_ndcg@10": float(np.mean([q["int8_test_ndcg@10"] for q in quality])),
        "int8_vs_float32": loss.relative_gain,
        "int8_vs_float32_p_value": loss.p_value,
        "int8_vs_float32_ci": list(loss.ci),
        "int8_p50_ms": served["p50_ms"],
        "int8_p99_ms": served["p99_ms"],
    }
