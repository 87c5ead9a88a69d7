"""Student benchmarks -> bench/results/student.json.

Training time to early stop on ML-100K (distilled, one seed), serving latency p50/p99 for one
user and throughput for batches (from a published bundle), and the per-user scoring cost of the
student vs the teacher, measured side by side.

Usage: python -m bench.student_bench   (needs the default teacher cache: run `make run` first,
or it is built here)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import default_teacher, save, work_dir
from distill.serving.bundle import bundle_files
from distill.serving.recommend import Recommender
from distill.student.cost import serving_cost
from distill.student.run import fit_and_evaluate
from distill.teacher.soft_labels import SoftLabels
from pipelines.config import RunConfig
from storage.registry import Registry


def main() -> None:
    work = work_dir()
    cfg = RunConfig(work_dir=work)
    dataset, split, cache = default_teacher(work, cfg)
    soft = SoftLabels(cache)
    t0 = time.perf_counter()
    run = fit_and_evaluate(  # no checkpoint dir: always trained here, so always measured
        split,
        cfg.student,
        cfg.distill,
        cfg.train.model_copy(update={"seed": 0}),
        soft_labels=soft,
        text_emb=cache.vectors("items", "embedding"),
    )
    wall_s = time.perf_counter() - t0
    cost = serving_cost(cache, run, run, split)  # the default student is the SASRec model

    with tempfile.TemporaryDirectory() as tmp:
        Registry(Path(tmp), "bench").publish(bundle_files(run, dataset), validation=run.valid)
        rec = Recommender.load(Path(tmp), "bench")
        users = list(rec.user_row)
        rng = np.random.default_rng(0)
        single = []
        for uid in rng.choice(users, size=500):
            t1 = time.perf_counter()
            rec.recommend(str(uid), 10)
            single.append(time.perf_counter() - t1)
        batch = {}
        for size in (64, 943):
            picks = [str(u) for u in rng.choice(users, size=size)]
            t1 = time.perf_counter()
            rec.recommend_batch(picks, 10)
            batch[f"users_per_s_batch_{size}"] = size / (time.perf_counter() - t1)
    save(
        "student",
        {
            "student": cfg.student.model_dump(),
            "distill": cfg.distill.model_dump(),
            "train_seconds_to_early_stop": run.train.seconds,
            "fit_and_evaluate_wall_seconds": wall_s,
            "best_epoch": run.train.best_epoch,
            "epochs_run": len(run.train.history),
            "test_ndcg@10": run.test.metrics["ndcg@10"],
            "serving_single_user_ms_p50": 1e3 * float(np.percentile(single, 50)),
            "serving_single_user_ms_p99": 1e3 * float(np.percentile(single, 99)),
            **batch,
            "cost": cost,
        },
    )


if __name__ == "__main__":
    main()
