"""Lightweight students: the accuracy–cost frontier, distilled and without the teacher, same shape.

    python -m bench.frontier [--dims 8 16 32 64] [--layers 1 2] [--seeds 2]
                             [--more 16x2 8x2 --more-seeds 5] [--workers 2]

What is measured per shape and arm is `distill/frontier.py`'s (the same section `kdrec quality
--frontier` puts in a report): on ML-100K with the default teacher (L = L_c + 0.5 L_k, KL at
T = 1), standard leave-one-out protocol, full ranking. The shapes named by `--more` get
`--more-seeds` seeds (the bars' points); the others `--seeds`.

Resumable: every training is checkpointed under the work dir's student cache (content-keyed), so
a re-run after an interruption trains only what is missing. The teacher cache is the default
run's (`make run` in the same work dir), built when missing.
Results: bench/results/frontier.json, docs/img/frontier.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.common import RESULTS, default_teacher, save, work_dir
from distill import frontier
from distill.report import frontier_plot
from distill.soft_labels import SoftLabels
from distill.student import stage
from distill.teacher.cache import TeacherCache
from distill.train import available_cores
from pipelines.config import RunConfig
from storage.workdir import WorkDir

IMAGE = Path(__file__).resolve().parents[1] / "docs" / "img" / "frontier.png"


def merged(
    rows: list[dict], tests: list[dict], shapes: list[tuple[int, int]]
) -> tuple[list[dict], list[dict], list[list[str]]]:
    """This run's shapes with the other shapes of the existing result file (the grid can be run
    a few shapes at a time); and every invocation's command line."""
    path = RESULTS / "frontier.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    other = [r for r in old.get("rows", []) if (r["dim"], r["n_layers"]) not in shapes]
    other_tests = [t for t in old.get("tests", []) if (t["dim"], t["n_layers"]) not in shapes]
    key = lambda r: (r["dim"], r["n_layers"], r.get("distilled", False))  # noqa: E731
    invocations = [*old.get("invocations", []), sys.argv]
    return sorted(rows + other, key=key), sorted(tests + other_tests, key=key), invocations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--more", type=frontier.shape, nargs="*", default=[(16, 2), (8, 2)])
    parser.add_argument("--more-seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=available_cores())
    args = parser.parse_args()
    work = work_dir()
    config = RunConfig(work_dir=work)
    dataset, split, cache = default_teacher(work, config)
    fingerprint = SoftLabels(TeacherCache(cache)).fingerprint
    shapes = list(args.more) + [
        (d, n) for d in args.dims for n in args.layers if (d, n) not in args.more
    ]  # the bars' shapes first
    seeds = {s: args.more_seeds if s in args.more else args.seeds for s in shapes}
    jobs, keys = frontier.jobs(
        dataset,
        split,
        fingerprint,
        config.sasrec,
        config.distill,
        config.train,
        seeds,
        WorkDir(work).students,
    )
    print(f"{len(jobs)} trainings ({len(shapes)} shapes), {args.workers} at a time", flush=True)
    done = stage.run_jobs(jobs, split, cache, workers=args.workers)
    found = frontier.section(keys, done, dataset, split)
    for row in found["rows"]:
        print(row, flush=True)
    rows, tests, invocations = merged(found["rows"], found["tests"], shapes)
    rows = frontier.with_ratios(rows)
    IMAGE.write_bytes(frontier_plot(rows, "SASRec students on ML-100K: width x blocks"))
    save(
        "frontier",
        {
            "teacher_fingerprint": fingerprint,
            "distill": config.distill.model_copy(update={"init": "random"}).model_dump(),
            "train": config.train.model_dump(),
            "rows": rows,
            "tests": tests,
            "invocations": invocations,
            "image": str(IMAGE.relative_to(RESULTS.parents[1])),
        },
    )


if __name__ == "__main__":
    main()
