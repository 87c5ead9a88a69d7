"""The zero-shot two-tower recipe's stages on synthetic data at ×1, ×10 and ×100 the ML-100K size
(the study before the sampled regime; `bench/scale.py` runs today's recipe through `kdrec run`).

    python -m bench.scale_stages                   # -> bench/results/scale_two_tower.json + .png
    python -m bench.scale_stages --scales 1 10     # a quicker look

Each size runs in its own process (so its peak RSS is its own), through the same stage functions
the Prefect flows call: ingest of `files` (bench/synthetic.py) -> split -> teacher prepare (texts,
LM embeddings, the FAISS candidate index) -> teacher labels (`pairs: candidates`, one shard per
`users_per_shard` users, committed) -> student training (two-tower, sparse distillation over
each user's candidates + sampled negatives) -> test evaluation -> bundle + publish.

The exponent of every stage is the least-squares slope of log(seconds) against
log(interactions) over the sizes; training stages are fitted on seconds per epoch. The two
stages that take well under a second at ×1, teacher labels and test evaluation, are timed
ROUNDS times and the fastest counts (each labels round writes every shard into an empty store
and reloads what the shards share, as the first does): on a shared box one slow ×1 run moved
the labels exponent by 0.2. What is held
back to make ×100 fit on 2 cores is in each size's `capped` and in SETTINGS below.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import synthetic
from bench.common import RESULTS, save, timer
from distill.student.run import StudentRun, place_items
from storage.atomic import atomic_write_bytes, atomic_write_json, read_json

SCALES = (1, 10, 100)
EVAL_USERS = 2_000  # full-ranking evaluation on a seeded sample of users per fold
ROUNDS = 3  # timings of the short stages (teacher labels, test evaluation); the best counts
MAX_EPOCHS = {1: 3, 10: 3, 100: 2}  # student epochs (seconds per epoch is what is fitted)
SETTINGS = {
    "teacher": {
        "pairs": "candidates",
        "candidates_top_k": 50,
        "candidates_random": 20,
        "users_per_shard": 4096,
        "position_top_k": 0,
        "max_length": 64,
        "texts": {"history_len": 5, "max_tokens": 64},
        "adapt": {"mode": "none"},
    },
    "student": {"kind": "two_tower", "dim": 64, "sampled_negatives": 1024},
    "distill": {"alpha": 0.5, "loss": "kl", "init": "random"},
    "train": {"lr": 0.01, "batch_size": 256, "patience": 5},
}
CAPPED = {
    "teacher.adapt": "none: zero-shot MiniLM, no head training (its full softmax is per item)",
    "teacher.texts": "user texts name the 5 most recent titles in at most 64 tokens",
    "evaluation": f"a seeded sample of {EVAL_USERS} users per fold",
    "baselines": "not run (EASE/ItemKNN are items x items); one distilled student, one seed",
    "publish": "the serving index is exact up to 100K items and HNSW above (x100: 106K items)",
}


def run_one(scale: float, root: Path) -> dict:
    """Every stage at one size, in this process; returns the size's record."""
    import torch

    from distill import index as faiss_index
    from distill.evaluation.harness import evaluate
    from distill.serving.bundle import bundle_files, serving_vectors
    from distill.student.config import StudentConfig
    from distill.student.fit import DistillConfig, UserData, student_scorer, train_student
    from distill.teacher import labels as teacher_labels
    from distill.teacher.base import TeacherConfig
    from distill.teacher.prepare import prepare as teacher_prepare
    from distill.teacher.soft_labels import SoftLabels
    from distill.training.loop import LoopConfig, apply_threads
    from storage.datasets import DatasetConfig, ingest, load_dataset
    from storage.registry import Provenance, Registry
    from storage.split import make_split
    from storage.workdir import WorkDir

    apply_threads("auto")
    work = root / "work"
    stages: dict[str, float] = {}
    with timer(stages, "generate"):
        paths = synthetic.generate(scale, root / "files")
    with timer(stages, "ingest"):
        config = DatasetConfig(name=f"syn-x{scale:g}", source="files", **paths)
        result = ingest(config, work_dir=work)
    with timer(stages, "split"):
        dataset = load_dataset(work, result.name, result.version)
        split = make_split(dataset, eval_users=EVAL_USERS)
        _ = split.train
    teacher = TeacherConfig.model_validate(SETTINGS["teacher"])
    with timer(stages, "teacher_prepare"):
        plan = teacher_prepare(teacher, dataset, split, work_dir=work)
    cache_dir = Path(plan.cache_dir)
    rounds: dict[str, list[float]] = {"teacher_labels": [], "student_evaluate": []}
    keys = [key for key, _, _ in plan.shards]
    for _ in range(ROUNDS):
        # every shard again; commit cleared the vectors, split and index the shards share
        shutil.rmtree(plan.store.root, ignore_errors=True)
        with timer(stages, "teacher_labels"):
            infos = [teacher_labels.score_shard(cache_dir, k, work_dir=work) for k in keys]
            manifest = teacher_labels.commit(cache_dir, infos)
        rounds["teacher_labels"].append(stages["teacher_labels"])
    student = StudentConfig.model_validate(SETTINGS["student"])
    kd = DistillConfig.model_validate(SETTINGS["distill"])
    epochs = MAX_EPOCHS.get(int(scale), 2)
    loop = LoopConfig.model_validate({**SETTINGS["train"], "max_epochs": epochs})
    with timer(stages, "student_train"):
        model, trained = train_student(
            split, student, kd, loop, soft_labels=SoftLabels(cache_dir), text_emb=None
        )
    per_epoch = trained.seconds / max(len(trained.history), 1)
    for _ in range(ROUNDS):
        with timer(stages, "student_evaluate"):
            scorer = student_scorer(model, UserData(split, student.history_len))
            test = evaluate(scorer, split)
        rounds["student_evaluate"].append(stages["student_evaluate"])
    stages.update({name: min(seconds) for name, seconds in rounds.items()})
    placement = place_items(model, split, None, None)
    run = StudentRun(
        model, student, kd, 0, trained, test, {"ndcg@10": trained.best_score}, 0.0, placement
    )
    with timer(stages, "publish"):
        files = bundle_files(run, dataset)
        registry = Registry(WorkDir(work).registry, "scale")
        published = registry.publish(
            files, Provenance(dataset=dataset.ref), validation={"ndcg@10": trained.best_score}
        )
    config = json.loads(files["config.json"])
    served = placement.served()  # the serving index's build alone, timed again (in publish too)
    item_vecs = served.numpy()
    user_vecs, _ = serving_vectors(model, dataset, student.history_len, served)
    t0 = time.perf_counter()
    faiss_index.build_index(item_vecs, queries=user_vecs)  # as bundle_files builds it
    index_seconds = time.perf_counter() - t0
    inter = dataset.interactions().height
    return {
        "scale": scale,
        "interactions": inter,
        "users": dataset.n_users,
        "items": dataset.n_items,
        "stages": {k: round(v, 2) for k, v in stages.items()},
        "rounds": {k: [round(v, 2) for v in seconds] for k, seconds in rounds.items()},
        "student_epoch_seconds": round(per_epoch, 2),
        "student_epochs": len(trained.history),
        "soft_label_pairs": int(manifest["total_rows"]),
        "teacher_shards": len(plan.shards),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "val_ndcg@10": round(trained.best_score, 4),
        "test_ndcg@10": round(test.metrics["ndcg@10"], 4),
        "published": published.version,
        "serving_index": config["index"],
        "serving_index_build_seconds": round(index_seconds, 2),
        "threads": torch.get_num_threads(),
        "capped": {**CAPPED, "student.max_epochs": epochs},
    }


def exponents(sizes: list[dict]) -> dict[str, float]:
    """Least-squares slope of log(seconds) on log(interactions) per stage (training: per epoch)."""
    if len(sizes) < 2:
        return {}
    x = np.log([s["interactions"] for s in sizes])
    series = {name: [s["stages"][name] for s in sizes] for name in sizes[0]["stages"]}
    series["student_train"] = [s["student_epoch_seconds"] for s in sizes]  # per epoch
    return {
        name: round(float(np.polyfit(x, np.log(np.maximum(t, 1e-3)), 1)[0]), 3)
        for name, t in series.items()
    }


def plot(sizes: list[dict], fitted: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = [s["interactions"] for s in sizes]
    for name in sizes[0]["stages"]:
        y = [
            s["student_epoch_seconds"] if name == "student_train" else s["stages"][name]
            for s in sizes
        ]
        label = (
            f"{name}{' (per epoch)' if name == 'student_train' else ''}: {fitted.get(name, 0):.2f}"
        )
        ax.loglog(x, y, marker="o", label=label)
    ax.loglog(x, [x[0] and 1.0 * xi / x[0] for xi in x], "k:", label="slope 1 (linear)")
    ax.set_xlabel("interactions")
    ax.set_ylabel("seconds")
    ax.set_title("kdrec stages against data size (legend: fitted exponent)")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(suffix=".png") as tmp:
        fig.savefig(tmp.name, dpi=110)
        atomic_write_bytes(path, Path(tmp.name).read_bytes())
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES))
    parser.add_argument("--root", type=Path, default=None, help="scratch folder (default: tmp)")
    parser.add_argument(
        "--resume", action="store_true", help="reuse sizes whose result.json is under --root"
    )
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # child: one size
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        atomic_write_json(args.out, run_one(args.one, args.root))
        return
    base = Path(args.root or tempfile.mkdtemp(prefix="kdrec-scale-"))
    sizes = []
    for scale in args.scales:
        folder = base / f"x{scale:g}"
        out = folder / "result.json"
        t0 = time.perf_counter()
        cmd = [
            sys.executable,
            __file__,
            "--one",
            str(scale),
            "--root",
            str(folder),
            "--out",
            str(out),
        ]
        print(f"scale ×{scale:g}: {folder}", flush=True)
        if not (args.resume and out.exists()):
            subprocess.run(cmd, check=True, env={**os.environ, "TQDM_DISABLE": "1"})
        sizes.append(read_json(out))
        print(json.dumps(sizes[-1]), f"({time.perf_counter() - t0:.0f} s)", flush=True)
    fitted = exponents(sizes)
    plot(sizes, fitted, RESULTS / "scale_two_tower.png")
    save(
        "scale_two_tower",
        {
            "command": "python -m bench.scale_stages",
            "settings": SETTINGS,
            "sizes": sizes,
            "exponents": fitted,
        },
    )


if __name__ == "__main__":
    main()
