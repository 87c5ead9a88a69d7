"""Lightweight students: the accuracy–cost frontier, distilled and without the teacher, same shape.

    python -m bench.frontier [--dims 8 16 32 64] [--layers 1 2] [--seeds 2]
                             [--more 16x2 8x2 --more-seeds 5] [--workers 2] [--fresh]

What is measured per shape and arm is `distill/studies/frontier.py`'s (the same section
`kdrec quality --frontier` puts in a report): on ML-100K with the default teacher
(L = L_c + 0.5 L_k, KL at T = 1), standard leave-one-out protocol, full ranking. The shapes
named by `--more` get `--more-seeds` seeds (the bars' points); the others `--seeds`.

Resumable: every training is checkpointed under the work dir's student cache (content-keyed), so
a re-run after an interruption trains only what is missing. The teacher cache is the default
run's (`make run` in the same work dir), built when missing.
Results: bench/results/frontier.json, docs/img/frontier.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import RESULTS, argv_in_repo, default_teacher, save, work_dir
from distill.evaluation.report.plots import frontier_plot
from distill.student.config import Shape, shape
from distill.student.jobs import TrainJob, run_jobs
from distill.studies import frontier
from distill.teacher.cache import TeacherCache
from distill.training.loop import available_cores
from pipelines.config import RunConfig
from storage.datasets import Dataset
from storage.split import Split
from storage.workdir import WorkDir

IMAGE = Path(__file__).resolve().parents[1] / "docs" / "img" / "frontier.png"


def merged(
    rows: list[dict], tests: list[dict], shapes: list[tuple[int, int]], fresh: bool = False
) -> tuple[list[dict], list[dict], list[list[str]]]:
    """This run's shapes with the other shapes of the existing result file (the grid can be run
    a few shapes at a time); and every invocation's command line. `fresh` starts a new file:
    nothing of the earlier invocations is kept (after a change of protocol)."""
    path = RESULTS / "frontier.json"
    old = json.loads(path.read_text()) if path.exists() and not fresh else {}
    other = [r for r in old.get("rows", []) if (r["dim"], r["n_layers"]) not in shapes]
    other_tests = [t for t in old.get("tests", []) if (t["dim"], t["n_layers"]) not in shapes]
    key = lambda r: (r["dim"], r["n_layers"], r.get("distilled", False))  # noqa: E731
    invocations = [*old.get("invocations", []), argv_in_repo()]
    return sorted(rows + other, key=key), sorted(tests + other_tests, key=key), invocations


def grid(
    config: RunConfig,
    dataset: Dataset,
    split: Split,
    fingerprint: str,
    seeds: dict[Shape, int],
) -> tuple[list[TrainJob], list[frontier.Key]]:
    """The frontier's trainings with the default run's settings, checkpointed in the work dir."""
    return frontier.jobs(
        dataset,
        split,
        fingerprint,
        config.sasrec,
        config.distill,
        config.train,
        seeds,
        WorkDir(config.work_dir).students,
    )


def side_by_side(
    config: RunConfig,
    dataset: Dataset,
    split: Split,
    cache: TeacherCache,
    fingerprint: str,
    workers: int,
) -> None:
    """Latency of every shape in frontier.json, timed in this one process one shape after the
    other (each invocation of the grid timed its own shapes under whatever else ran then): the
    plain seed-0 model of each shape (a distilled one has the same architecture), float32 and
    int8. Replaces the rows' latency columns; quality is untouched."""
    path = RESULTS / "frontier.json"
    old = json.loads(path.read_text())
    shapes = sorted({(r["dim"], r["n_layers"]) for r in old["rows"]})
    jobs, keys = grid(config, dataset, split, fingerprint, {s: 1 for s in shapes})
    plain = [(job, key) for job, key in zip(jobs, keys, strict=True) if not key[2]]
    print(f"{len(plain)} plain seed-0 models (trained if not checkpointed)", flush=True)
    runs = run_jobs([job for job, _ in plain], split, cache, workers=workers)
    timed = {}
    for (_, (dim, layers, _)), run in zip(plain, runs, strict=True):
        f32 = frontier.latency(run, dataset, split)
        int8 = frontier.latency(run, dataset, split, tower="int8")
        timed[(dim, layers)] = {
            "p50_ms": f32["p50_ms"],
            "p99_ms": f32["p99_ms"],
            "int8_p50_ms": int8["p50_ms"],
            "int8_p99_ms": int8["p99_ms"],
        }
        print(f"{dim}x{layers}", timed[(dim, layers)], flush=True)
    rows = frontier.with_ratios([{**r, **timed[(r["dim"], r["n_layers"])]} for r in old["rows"]])
    IMAGE.write_bytes(frontier_plot(rows, "SASRec students on ML-100K: width x blocks"))
    provenance = ("benchmark", "created_at", "git_commit", "argv", "machine")
    save(
        "frontier",
        {
            **{k: v for k, v in old.items() if k not in provenance},
            "rows": rows,
            "invocations": [*old.get("invocations", []), argv_in_repo()],
            "latency": "every shape timed side by side in the last invocation (--latency-only)",
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--more", type=shape, nargs="*", default=[(16, 2), (8, 2)])
    parser.add_argument("--more-seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=available_cores())
    parser.add_argument(
        "--latency-only",
        action="store_true",
        help="re-time every shape of frontier.json side by side in this one process",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="start a new frontier.json: drop the rows and tests of earlier invocations",
    )
    args = parser.parse_args()
    work = work_dir()
    config = RunConfig(work_dir=work)
    dataset, split, cache = default_teacher(work, config)
    fingerprint = cache.fingerprint
    if args.latency_only:
        side_by_side(config, dataset, split, cache, fingerprint, args.workers)
        return
    shapes = list(args.more) + [
        (d, n) for d in args.dims for n in args.layers if (d, n) not in args.more
    ]  # the bars' shapes first
    seeds = {s: args.more_seeds if s in args.more else args.seeds for s in shapes}
    jobs, keys = grid(config, dataset, split, fingerprint, seeds)
    print(f"{len(jobs)} trainings ({len(shapes)} shapes), {args.workers} at a time", flush=True)
    done = run_jobs(jobs, split, cache, workers=args.workers)
    found = frontier.section(keys, done, dataset, split)
    for row in found["rows"]:
        print(row, flush=True)
    rows, tests, invocations = merged(found["rows"], found["tests"], shapes, args.fresh)
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
