"""Distillation settings sweep -> bench/results/kd_sweep.json.

Trains the default student (configs/default.yaml) on the default teacher cache once per setting and
seed: no distillation, then KL at several (alpha, T) and `rank`, each from SASRec's random init or
started as a teacher head (`init: teacher`). Every setting sees the same
seeds. The setting to use is the one with the best mean *validation* NDCG@10; test NDCG@10 is
recorded next to it but must not be used to choose.

Rows accumulate in the JSON (a re-run setting and seeds replaces its row); compare settings on
the same seeds only. Usage: python -m bench.kd_sweep [--seeds 0,1] [--only 9,10] [--student ...]
(a two-tower run takes ~40 s on 2 cores; a sequential (SASRec) run ~4-6 min.)
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from bench.common import RESULTS, default_teacher, save, work_dir
from distill.student.config import StudentConfig
from distill.student.fit import DistillConfig
from distill.student.jobs import TrainJob, checkpoint_dir, run_jobs
from distill.teacher.soft_labels import SoftLabels
from distill.training.loop import available_cores
from pipelines.config import RunConfig
from storage.workdir import WorkDir

R, T = {"init": "random"}, {"init": "teacher"}  # student start: SASRec init, or a teacher head
GRID: list[dict] = [
    {"alpha": 0.0, **R},
    {"alpha": 0.25, **R},
    {"alpha": 0.5, **R},
    {"alpha": 1.0, **R},
    {"alpha": 2.0, **R},
    {"alpha": 1.0, "temperature": 0.5, **R},
    {"alpha": 1.0, "temperature": 2.0, **R},
    {"alpha": 0.5, "temperature": 2.0, **R},
    {"alpha": 1.0, "loss": "rank", **R},
    {"alpha": 0.0, **T},
    {"alpha": 0.5, **T},
    {"alpha": 1.0, **T},
    {"alpha": 0.25, **T},
    {"alpha": 0.5, "lr": 3e-4, **T},
    {"alpha": 1.0, "lr": 3e-4, **T},
    {"alpha": 0.5, "lr": 1e-4, **T},
]


def merged(rows: list[dict]) -> list[dict]:
    """Earlier results (other settings or seeds) kept; a re-run setting replaces its old row."""
    path = RESULTS / "kd_sweep.json"
    old = json.loads(path.read_text())["rows"] if path.exists() else []
    key = lambda r: json.dumps(  # noqa: E731
        [r["distill"], r["seeds"], r.get("batches", "shards")], sort_keys=True
    )
    new = {key(r) for r in rows}
    return [r for r in old if "seeds" in r and key(r) not in new] + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds per setting")
    parser.add_argument("--student", choices=["two_tower", "sequential"], default=None)
    parser.add_argument("--only", default=None, help="comma-separated GRID indices to run")
    parser.add_argument("--workers", type=int, default=available_cores())
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = GRID if args.only is None else [GRID[int(i)] for i in args.only.split(",")]

    work = work_dir()
    cfg = RunConfig(work_dir=work)
    student = cfg.student
    if args.student:
        student = StudentConfig(**{**student.model_dump(), "kind": args.student})
    dataset, split, cache = default_teacher(work, cfg)
    labels = SoftLabels(cache)
    fingerprint = labels.fingerprint
    batches = "whole" if labels.fits_in_memory() else "shards"  # how the distilled arm shuffles
    jobs = []
    for setting in grid:  # checkpoints shared with `kdrec quality`: a trained arm is reused
        kd = DistillConfig(**setting)
        for seed in seeds:
            ckpt = checkpoint_dir(
                WorkDir(work).students,
                dataset,
                split,
                fingerprint,
                student,
                kd,
                cfg.train,
                seed,
            )
            jobs.append(TrainJob(student, kd, cfg.train.model_copy(update={"seed": seed}), ckpt))
    runs = run_jobs(jobs, split, cache, workers=args.workers)
    rows = []
    for i, setting in enumerate(grid):
        mine = runs[i * len(seeds) : (i + 1) * len(seeds)]
        valid = [r.valid["ndcg@10"] for r in mine]
        test = [r.test.primary for r in mine]
        rows.append(
            {
                "distill": mine[0].kd.model_dump(),
                "seeds": seeds,
                "batches": batches,
                "valid_ndcg@10": valid,
                "test_ndcg@10": test,
                "valid_mean": float(np.mean(valid)),
                "test_mean": float(np.mean(test)),
                "best_epochs": [r.train.best_epoch for r in mine],
                "train_seconds": [r.train.seconds for r in mine],
            }
        )
        print(f"{setting}: valid {np.mean(valid):.4f}  test {np.mean(test):.4f}", flush=True)
    rows = merged(rows) if not args.student else rows
    best = max((r for r in rows if r["seeds"] == seeds), key=lambda r: r["valid_mean"])
    save(
        "kd_sweep" if not args.student else f"kd_sweep_{args.student}",
        {
            "student": student.model_dump(),
            "teacher_fingerprint": fingerprint,
            "chosen_on_validation": {"seeds": seeds, **best["distill"]},
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
