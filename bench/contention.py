"""Training speed on a busy machine: idle against two competing CPU-bound processes.

    python -m bench.contention [--epochs 3]

A fixed piece of real work — `--epochs` epochs on ML-100K of the teacher head's architecture (SASRec
+ a projection of the cached MiniLM item embeddings), the sequential student and the two-tower
student — is timed in a fresh process, once on an idle machine and once while two pure-Python busy
loops (started and stopped here) compete for the cores. Each is timed with OpenMP's wait policy as
kdrec sets it (PASSIVE, before torch loads) and as torch ships it (ACTIVE: threads spin-wait), with
torch using every core this process may use. Target: loaded / idle ≤ 3.0 on 2 cores (perfect
sharing with two busy loops would be 2x). Results: bench/results/contention.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PARTS = ("teacher_head", "sequential", "two_tower")
BUSY = "while True: pass"


def one(part: str, epochs: int) -> float:
    """Seconds for `epochs` epochs of `part` (run in a fresh process: the wait policy is read
    when torch loads)."""
    from bench.common import default_teacher, work_dir
    from distill.student.config import StudentConfig
    from distill.student.fit import DistillConfig, train_student
    from distill.teacher.cache import TeacherCache
    from distill.training.loop import LoopConfig
    from pipelines.config import RunConfig

    work = work_dir()
    _, split, cache = default_teacher(work, RunConfig(work_dir=work))
    config = {
        "teacher_head": StudentConfig(text_projection=True),
        "sequential": StudentConfig(),
        "two_tower": StudentConfig(kind="two_tower"),
    }[part]
    text = TeacherCache(cache).vectors("items", "embedding") if config.text_projection else None
    loop = LoopConfig(max_epochs=epochs, patience=epochs)
    t0 = time.perf_counter()
    train_student(
        split, config, DistillConfig(alpha=0.0, init="random"), loop, soft_labels=None,
        text_emb=text,
    )  # fmt: skip
    return time.perf_counter() - t0


def timed(part: str, epochs: int, policy: str) -> float:
    env = {**os.environ, "OMP_WAIT_POLICY": policy}
    out = subprocess.run(
        [sys.executable, __file__, "--one", part, "--epochs", str(epochs)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--competitors", type=int, default=2)
    parser.add_argument("--one", choices=PARTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(one(args.one, args.epochs))
        return
    from bench.common import save
    from distill.training.loop import available_cores

    timed("two_tower", 1, "PASSIVE")  # warm-up: ingest and teacher cache, file caches
    rows = []
    for policy in ("PASSIVE", "ACTIVE"):
        for part in PARTS:
            idle = timed(part, args.epochs, policy)
            busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.competitors)]
            try:
                loaded = timed(part, args.epochs, policy)
            finally:
                for proc in busy:
                    proc.kill()
                    proc.wait()
            row = {
                "work": part,
                "omp_wait_policy": policy,
                "idle_s": round(idle, 2),
                "loaded_s": round(loaded, 2),
                "ratio": round(loaded / idle, 2),
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    save(
        "contention",
        {
            "command": "python -m bench.contention " + " ".join(sys.argv[1:]),
            "epochs": args.epochs,
            "competitors": args.competitors,
            "cores": available_cores(),
            "target": "loaded / idle <= 3.0 with PASSIVE (kdrec's setting)",
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
