"""Cold items: can the student rank items it never saw, from their text alone?

    python -m bench.cold_items [--fraction 0.1] [--seed 0]

Holds out a random `--fraction` of ML-100K's items with all their interactions, ingests the rest as
a dataset of its own, runs the default teacher on it, and trains two students side by side with
the default recipe and distillation (`init: random`, as a text-projected student is not shaped like
a teacher head): one with the text projection and one without. The held-out items then arrive as
they would in a nightly inbox: the teacher LM encodes their texts and the student's projection
places them (`distill.serving.cold_items`, the code behind `kdrec models extend`); no retraining.

Scored for every user who interacted with a held-out item, from the user's whole warm history
(the serving vector); targets are the user's held-out items. Two rankings:
- among the held-out items only (which new item to show): the no-text student and popularity
  (all new items have 0 interactions) can only order them at random; their expected NDCG@10 is
  the mean over 1,000 random orders. For scale, an oracle row ranks them by the very
  interactions that were held out (knowledge no model has on the night the items arrive);
- among all items, the user's history excluded: popularity and the no-text student put every
  new item below every known one (NDCG@10 exactly 0); the text student must lift them above
  known items.
Results: bench/results/cold_items.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import torch

from bench.common import movielens, save, work_dir
from distill.serving.bundle import serving_vectors
from distill.serving.cold_items import NoTextProjection, cold_vectors
from distill.serving.recommend import HistoryEncoder
from distill.student.fit import DistillConfig
from distill.student.jobs import TrainJob, checkpoint_dir, run_jobs
from distill.teacher.prepare import load_teacher
from distill.teacher.stage import run_teacher
from distill.texts import item_texts
from distill.training.loop import available_cores
from pipelines.config import RunConfig
from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.split import make_split
from storage.workdir import WorkDir


def ndcg_at_10(scores: np.ndarray, targets: list[set[int]]) -> float:
    """Mean NDCG@10 of (U, C) scores against each row's set of relevant columns."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    discounts = 1 / np.log2(np.arange(2, 12))
    out = []
    for row, relevant in zip(top, targets, strict=True):
        dcg = sum(d for i, d in zip(row, discounts, strict=True) if i in relevant)
        out.append(dcg / discounts[: min(len(relevant), 10)].sum())
    return float(np.mean(out))


def warm_dataset(work: Path, fraction: float, seed: int, tmp: Path):
    """(warm dataset, its split, the held-out items frame) with `fraction` of items removed."""
    full, _ = movielens(work)
    items = full.items()
    rng = np.random.default_rng(seed)
    cold_ids = set(
        rng.choice(items.get_column("item_id").to_numpy(), int(fraction * items.height), False)
    )
    is_cold = pl.col("item_id").is_in(list(cold_ids))
    inter = full.interactions()
    warm_inter = inter.filter(~is_cold).drop("user_idx", "item_idx")
    users = full.users().filter(pl.col("user_id").is_in(warm_inter.get_column("user_id").unique()))
    paths = {
        "interactions": tmp / "interactions.parquet",
        "items": tmp / "items.parquet",
        "users": tmp / "users.parquet",
    }
    warm_inter.write_parquet(paths["interactions"])
    items.filter(~is_cold).drop("item_idx").write_parquet(paths["items"])
    users.drop("user_idx").write_parquet(paths["users"])
    config = DatasetConfig(name=f"ml100k-warm-{seed}", source="files", **paths)
    result = ingest(config, work_dir=work)
    dataset = load_dataset(work, result.name, result.version)
    cold_inter = inter.filter(is_cold).select("user_id", "item_id")
    return dataset, make_split(dataset), items.filter(is_cold), cold_inter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="which items are held out")
    parser.add_argument("--workers", type=int, default=available_cores())
    args = parser.parse_args()
    work = work_dir()
    cfg = RunConfig(work_dir=work)
    with tempfile.TemporaryDirectory() as tmp:
        dataset, split, cold_items, cold_inter = warm_dataset(
            work, args.fraction, args.seed, Path(tmp)
        )
    print(f"warm dataset {dataset.ref}: {dataset.n_items} items; {cold_items.height} held out")
    teacher = run_teacher(cfg.teacher, dataset, split, work_dir=work, progress=False)
    cache = teacher.cache
    kd = DistillConfig(**{**cfg.distill.model_dump(), "init": "random"})
    arms = {
        "student with text projection": cfg.student.model_copy(update={"text_projection": True}),
        "student without text projection": cfg.student.model_copy(
            update={"text_projection": False}
        ),
    }
    jobs = [
        TrainJob(
            student,
            kd,
            cfg.train,
            checkpoint_dir(
                WorkDir(work).students,
                dataset,
                split,
                teacher.plan.fingerprint,
                student,
                kd,
                cfg.train,
                cfg.train.seed,
            ),
        )
        for student in arms.values()
    ]
    runs = dict(zip(arms, run_jobs(jobs, split, cache, workers=args.workers), strict=True))

    lm = load_teacher(cfg.teacher, work)
    cold_emb = lm.encode(item_texts(cold_items, cfg.teacher.texts).get_column("text").to_list())
    cold_col = {item: j for j, item in enumerate(cold_items.get_column("item_id").to_list())}
    user_row = {u: i for i, u in enumerate(dataset.users().get_column("user_id").to_list())}
    targets: dict[int, set[int]] = {}
    for user, item in cold_inter.iter_rows():
        if user in user_row:  # users with no warm history have no vector
            targets.setdefault(user_row[user], set()).add(cold_col[item])
    users = np.asarray(sorted(targets))
    wanted = [targets[u] for u in users]
    n_warm = dataset.n_items
    seen = split.matrix("train", "valid", "test")[users].toarray() > 0  # the whole warm history

    rng = np.random.default_rng(0)
    random_cold = np.mean(
        [ndcg_at_10(rng.random((len(users), len(cold_col))), wanted) for _ in range(1000)]
    )
    counts = np.zeros(len(cold_col))  # the held-out interactions themselves: future knowledge
    for _, item in cold_inter.iter_rows():
        counts[cold_col[item]] += 1
    oracle = np.broadcast_to(counts, (len(users), len(cold_col)))
    rows = [
        {
            "model": "popularity (new items all at 0) / random order",
            "ndcg@10_among_new_items": round(float(random_cold), 4),
            "ndcg@10_among_all_items": 0.0,
        },
        {
            "model": "oracle popularity (counts of the held-out interactions; not available)",
            "ndcg@10_among_new_items": round(ndcg_at_10(oracle, wanted), 4),
        },
    ]
    for name, run in runs.items():
        model = run.model.eval()
        user_vecs, _ = serving_vectors(model, dataset, run.config.history_len)
        with torch.no_grad():
            warm_vecs = model.item_vectors().numpy()
        try:
            new_vecs = cold_vectors(HistoryEncoder(model, warm_vecs, 1), cold_emb)
        except NoTextProjection:
            rows.append(
                {
                    "model": name,
                    "ndcg@10_among_new_items": round(float(random_cold), 4),
                    "ndcg@10_among_all_items": 0.0,
                    "note": "no text projection: new items have no vector (random / last)",
                    "test_ndcg@10_warm": round(run.test.primary, 4),
                }
            )
            continue
        u = user_vecs[users]
        among_new = u @ new_vecs.T
        among_all = np.concatenate([u @ warm_vecs.T, among_new], axis=1)
        among_all[:, :n_warm][seen] = -np.inf
        shifted = [{n_warm + c for c in t} for t in wanted]
        rows.append(
            {
                "model": name,
                "ndcg@10_among_new_items": round(ndcg_at_10(among_new, wanted), 4),
                "ndcg@10_among_all_items": round(ndcg_at_10(among_all, shifted), 4),
                "test_ndcg@10_warm": round(run.test.primary, 4),
            }
        )
    for row in rows:
        print(row, flush=True)
    path = save(
        "cold_items",
        {
            "command": "python -m bench.cold_items " + " ".join(sys.argv[1:]),
            "dataset": dataset.ref,
            "held_out_items": len(cold_col),
            "held_out_seed": args.seed,
            "users_scored": len(users),
            "target_pairs": int(sum(len(t) for t in wanted)),
            "teacher_fingerprint": teacher.plan.fingerprint,
            "distill": kd.model_dump(),
            "best_epochs": {n: r.train.best_epoch for n, r in runs.items()},
            "rows": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
