"""The plain SASRec's hyperparameters, chosen on validation -> bench/results/sasrec_grid.json.

Trains the report's "SASRec (no teacher)" arm (ID embeddings only, no teacher) at each point of a
small grid around the standard recipe (RecBole's SASRec defaults: 2 blocks, 2 heads, width 64, inner
256, dropout 0.5, lr 1e-3, every next item of the history as a target), seeds 0.., and reports the
mean validation NDCG@10 per point; the point with the best validation is the default in
configs/default.yaml. Test NDCG@10 is recorded next to it but must not be used to choose.
Checkpoints are shared with `kdrec quality`, so a point it already trained is reused.

Usage: python -m bench.sasrec_grid [--seeds 0] [--workers 2]   (~6 min per run on one core)
"""

from __future__ import annotations

import argparse

import numpy as np

from bench.common import default_teacher, save, work_dir
from distill.student.jobs import TrainJob, checkpoint_dir, run_jobs
from distill.teacher.soft_labels import SoftLabels
from distill.training.loop import available_cores
from pipelines.config import RunConfig
from storage.workdir import WorkDir

GRID: list[dict] = [
    {"student": {}, "train": {}},  # the standard recipe
    {"student": {}, "train": {"lr": 2e-3}},
    {"student": {"dropout": 0.3}, "train": {}},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--workers", type=int, default=available_cores())
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    work = work_dir()
    cfg = RunConfig(work_dir=work)
    dataset, split, cache = default_teacher(work, cfg)
    fingerprint = SoftLabels(cache).fingerprint
    no_kd = cfg.distill.model_copy(update={"alpha": 0.0})
    jobs = []
    for point in GRID:
        model = cfg.sasrec.model_copy(update=point["student"])
        loop = cfg.train.model_copy(update=point["train"])
        for seed in seeds:
            seeded = loop.model_copy(update={"seed": seed})
            ckpt = checkpoint_dir(
                WorkDir(work).students, dataset, split, fingerprint, model, no_kd, loop, seed
            )
            jobs.append(TrainJob(model, no_kd, seeded, ckpt))
    runs = run_jobs(jobs, split, cache, workers=args.workers)
    rows = []
    for i, point in enumerate(GRID):
        mine = runs[i * len(seeds) : (i + 1) * len(seeds)]
        rows.append(
            {
                "point": point,
                "valid_ndcg@10": float(np.mean([r.valid["ndcg@10"] for r in mine])),
                "test_ndcg@10": float(np.mean([r.test.primary for r in mine])),
                "best_epochs": [r.train.best_epoch for r in mine],
                "train_seconds": [r.train.seconds for r in mine],
            }
        )
        print(rows[-1], flush=True)
    best = max(rows, key=lambda r: r["valid_ndcg@10"])
    save("sasrec_grid", {"seeds": seeds, "rows": rows, "chosen_on_validation": best["point"]})


if __name__ == "__main__":
    main()
