"""Lightweight students: the accuracy–cost frontier, distilled and without the teacher, same shape.

    python -m bench.frontier [--dims 8 16 32 64] [--layers 1 2] [--seeds 2]
                             [--more 16x2 8x2 --more-seeds 5] [--workers 2]

For every SASRec shape (width x transformer blocks) two models are trained per seed on ML-100K
(standard leave-one-out protocol, full ranking): the distilled student (the default teacher's
soft labels, L = L_c + 0.5 L_k, KL at T = 1, starting from a random init, since a head of the
teacher has width 64) and the same shape without the teacher (alpha 0: the plain SASRec of that
shape). The shapes named by `--more` get `--more-seeds` seeds (the bars' points). Recorded per
shape and arm: validation and test NDCG@10 (mean and std over seeds), parameters, the bytes of its
publishable bundle (weights, item and user tables, exact FAISS index), training seconds, and the
p50 / p99 latency of one request through the serving path (`Recommender.recommend_history`: the
student's user tower over a history, then a FAISS top-10 search; one thread, 300 test users,
each request timed alone), and per shape the per-user paired test of distilled vs plain on test.

Resumable: every training is checkpointed under the work dir's student cache (content-keyed), so
a re-run after an interruption trains only what is missing. The teacher cache is the default
run's (`make run` in the same work dir), built when missing.
Results: bench/results/frontier.json, docs/img/frontier.png.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS, default_teacher, save, work_dir
from distill import index as faiss_index
from distill.bundle import bundle_files
from distill.evaluate import evaluate, vector_scorer
from distill.recommend import Recommender
from distill.report import paired
from distill.soft_labels import SoftLabels
from distill.student import stage
from distill.student.build import int8_tower, n_params
from distill.student.fit import UserData
from distill.teacher.cache import TeacherCache
from distill.train import available_cores
from pipelines.config import RunConfig
from storage.datasets import Dataset
from storage.registry import Registry
from storage.split import Split
from storage.workdir import WorkDir

IMAGE = Path(__file__).resolve().parents[1] / "docs" / "img" / "frontier.png"


def shape(text: str) -> tuple[int, int]:
    dim, layers = text.lower().split("x")
    return int(dim), int(layers)


def int8_quality(run: stage.StudentRun, split: Split) -> dict:
    """Test NDCG@10 served in int8 end to end: the int8 user tower's vectors against the items
    as the SQ8 index decodes them (what its inner-product search ranks by)."""
    served = run.placement.served().detach().numpy()
    sq8 = faiss_index.build_sq8(np.ascontiguousarray(served))
    decoded = sq8.reconstruct_n(0, sq8.ntotal)
    tower = int8_tower(run.model)
    data = UserData(split, run.config.history_len)
    item_vecs = torch.as_tensor(served)

    def user_vectors(users: np.ndarray, fold: str) -> torch.Tensor:
        u = torch.as_tensor(users)
        with torch.no_grad():
            return tower.user_vectors(u, data.hist[fold][u], item_vecs)

    result = evaluate(vector_scorer(lambda u, f: user_vectors(u, f).numpy(), decoded), split)
    return {"int8_test_ndcg@10": result.metrics["ndcg@10"], "int8_test": result}


def latency(
    run: stage.StudentRun, dataset: Dataset, split: Split, n: int = 300, tower: str = "float32"
) -> dict:
    """p50 / p99 ms of one history request through the serving path, one thread; `tower`
    "int8" serves with the int8 user tower and the SQ8 index."""
    files = bundle_files(run, dataset, {}, quantized=tower == "int8")
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp), "frontier")
        registry.publish(files, {}, validation=dict(run.valid), force=True)
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


def int8_columns(runs: list[stage.StudentRun], dataset: Dataset, split: Split) -> dict:
    """Quality (every seed) and latency (seed 0) served in int8: tower and index."""
    quality = [int8_quality(r, split) for r in runs]
    served = latency(runs[0], dataset, split, tower="int8")
    loss = paired([q["int8_test"] for q in quality], [r.test for r in runs], names=("int8", "f32"))
    return {
        "int8_test_ndcg@10": float(np.mean([q["int8_test_ndcg@10"] for q in quality])),
        "int8_vs_float32": loss["relative_gain"],
        "int8_vs_float32_p_value": loss["p_value"],
        "int8_p50_ms": served["p50_ms"],
        "int8_p99_ms": served["p99_ms"],
    }


def plot(rows: list[dict]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for distilled, marker, label in ((False, "o", "no teacher"), (True, "s", "distilled")):
        mine = [r for r in rows if r["distilled"] == distilled]
        ax.scatter(
            [r["p50_ms"] for r in mine],
            [r["test_ndcg@10"] for r in mine],
            marker=marker,
            label=label,
        )
        for r in mine:
            ax.annotate(
                f"{r['dim']}x{r['n_layers']}",
                (r["p50_ms"], r["test_ndcg@10"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("p50 latency per history request (ms, one thread)")
    ax.set_ylabel("test NDCG@10 (mean over seeds)")
    ax.set_title("SASRec students on ML-100K: width x blocks")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


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
    parser.add_argument("--more", type=shape, nargs="*", default=[(16, 2), (8, 2)])
    parser.add_argument("--more-seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=available_cores())
    args = parser.parse_args()
    work = work_dir()
    config = RunConfig(work_dir=work)
    dataset, split, cache = default_teacher(work, config)
    fingerprint = SoftLabels(TeacherCache(cache)).fingerprint
    kd = config.distill.model_copy(update={"init": "random"})
    arms = {True: kd, False: stage.plain_kd(kd)}
    shapes = list(args.more) + [
        (d, n) for d in args.dims for n in args.layers if (d, n) not in args.more
    ]
    jobs, keys = [], []
    for dim, layers in shapes:  # the bars' shapes first
        student = config.sasrec.model_copy(update={"dim": dim, "n_layers": layers})
        seeds = args.more_seeds if (dim, layers) in args.more else args.seeds
        for seed in range(seeds):
            for distilled, this_kd in arms.items():
                jobs.append(
                    stage.train_job(
                        dataset,
                        split,
                        fingerprint,
                        student,
                        this_kd,
                        config.train,
                        seed,
                        WorkDir(work).students,
                        name=f"{dim}x{layers} {'distilled' if distilled else 'plain'}",
                    )
                )
                keys.append((dim, layers, distilled))
    print(f"{len(jobs)} trainings ({len(shapes)} shapes), {args.workers} at a time", flush=True)
    done = stage.run_jobs(jobs, split, cache, workers=args.workers)
    runs: dict[tuple[int, int, bool], list[stage.StudentRun]] = {}
    for key, run in zip(keys, done, strict=True):
        runs.setdefault(key, []).append(run)
    rows, tests = [], []
    for dim, layers in shapes:
        for distilled in (False, True):
            mine = runs[(dim, layers, distilled)]
            test = [r.test.metrics["ndcg@10"] for r in mine]
            valid = [r.valid["ndcg@10"] for r in mine]
            rows.append(
                {
                    "dim": dim,
                    "n_layers": layers,
                    "distilled": distilled,
                    "seeds": len(mine),
                    "valid_ndcg@10": float(np.mean(valid)),
                    "valid_ndcg@10_std": float(np.std(valid)),
                    "test_ndcg@10": float(np.mean(test)),
                    "test_ndcg@10_std": float(np.std(test)),
                    "test_hr@10": float(np.mean([r.test.metrics["hr@10"] for r in mine])),
                    "params": n_params(mine[0].model),
                    "train_seconds": float(np.mean([r.train.seconds for r in mine])),
                    "best_epoch": float(np.mean([r.train.best_epoch for r in mine])),
                    **latency(mine[0], dataset, split),
                    **int8_columns(mine, dataset, split),
                }
            )
            print(rows[-1], flush=True)
        test = paired(
            [r.test for r in runs[(dim, layers, True)]],
            [r.test for r in runs[(dim, layers, False)]],
            names=("distilled", "plain"),
        )
        tests.append({"dim": dim, "n_layers": layers, **test})
        print(tests[-1], flush=True)
    rows, tests, invocations = merged(rows, tests, shapes)
    IMAGE.write_bytes(plot(rows))
    base = next(
        (r for r in rows if (r["dim"], r["n_layers"], r["distilled"]) == (64, 2, False)), None
    )
    if base is not None:  # the plain SASRec-64 the bars compare with
        for r in rows:
            r["params_vs_sasrec64"] = r["params"] / base["params"]
            r["p50_vs_sasrec64"] = r["p50_ms"] / base["p50_ms"]
            r["test_vs_sasrec64"] = r["test_ndcg@10"] / base["test_ndcg@10"]
    save(
        "frontier",
        {
            "teacher_fingerprint": fingerprint,
            "distill": kd.model_dump(),
            "train": config.train.model_dump(),
            "rows": rows,
            "tests": tests,
            "invocations": invocations,
            "image": str(IMAGE.relative_to(RESULTS.parents[1])),
        },
    )


if __name__ == "__main__":
    main()
