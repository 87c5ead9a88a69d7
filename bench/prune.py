"""Pruning by width: the default student distilled from the same teacher at smaller widths.

    python -m bench.prune [--dims 64,32,16] [--seed 0]

Each width trains the default student (SASRec, KD kl α 0.5) from a random start (`init: teacher`
needs the teacher head's width, 64) on the default teacher cache, side by side. Reports the bundle's
size (what `kdrec serve` loads: student weights, both indexes, users) against validation and test
NDCG@10 (standard protocol). Results: bench/results/prune.json. Choose a width on validation.
"""

from __future__ import annotations

import argparse
import sys

from bench.common import default_teacher, save, work_dir
from distill.serving.bundle import bundle_files
from distill.student.fit import DistillConfig
from distill.student.jobs import TrainJob, checkpoint_dir, run_jobs
from distill.teacher.soft_labels import SoftLabels
from distill.training.loop import available_cores
from pipelines.config import RunConfig
from storage.workdir import WorkDir

SERVED = ("student.safetensors", "items.faiss", "items.sq8.faiss", "items.parquet", "users.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="64,32,16")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=available_cores())
    args = parser.parse_args()
    work = work_dir()
    cfg = RunConfig(work_dir=work)
    dataset, split, cache = default_teacher(work, cfg)
    fingerprint = SoftLabels(cache).fingerprint
    kd = DistillConfig(**{**cfg.distill.model_dump(), "init": "random"})
    loop = cfg.train.model_copy(update={"seed": args.seed})
    students = [cfg.student.model_copy(update={"dim": int(d)}) for d in args.dims.split(",")]
    jobs = [
        TrainJob(
            student,
            kd,
            loop,
            checkpoint_dir(
                WorkDir(work).students, dataset, split, fingerprint, student, kd, loop, args.seed
            ),
        )
        for student in students
    ]
    rows = []
    for student, run in zip(
        students, run_jobs(jobs, split, cache, workers=args.workers), strict=True
    ):
        files = bundle_files(run, dataset)
        rows.append(
            {
                "dim": student.dim,
                "params": sum(p.numel() for p in run.model.parameters()),
                "student_bytes": len(files["student.safetensors"]),
                "served_bytes": sum(len(files[name]) for name in SERVED),
                "valid_ndcg@10": round(run.valid["ndcg@10"], 4),
                "test_ndcg@10": round(run.test.primary, 4),
                "best_epoch": run.train.best_epoch,
            }
        )
        print(rows[-1], flush=True)
    save(
        "prune",
        {
            "command": "python -m bench.prune " + " ".join(sys.argv[1:]),
            "teacher_fingerprint": fingerprint,
            "distill": kd.model_dump(),
            "seed": args.seed,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
