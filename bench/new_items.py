"""New items: what each lever of the content path buys, on validation and test.

    python -m bench.new_items [--seeds 5] [--share 0.1] [--holdout-seed 0]

The item-cold-start protocol of `kdrec quality` with `split.new_items`
(distill/evaluation/new_items.py):
a seeded share of ML-100K's items held out with all their interactions, the models trained on
the rest, every model scored warm / new among new / new among all. It reuses the checkpoints of
`kdrec quality --config <split.new_items: 0.1>` run in the same work dir (it trains what is
missing), then for the plain SASRec and the distilled student of every seed fits content towers
with each lever changed alone (item dropout, the teacher's KD weight, a hidden layer), and
sweeps the scale cold items are served at. Recorded per (model, lever, seed, scale): the three
views on the validation half; at the scale each calibration rule picks on validation (warm
NDCG@10 at least 0.99x the plain SASRec's, the product's rule; at most 1 % below the same model
unplaced; at least the DropoutNet-style student's as trained), the test half too. Also: the
DropoutNet-style student's own sweep, the fixed rows (the teacher, oracle popularity: the
held-out counts themselves), and new-among-new the way bench/results/cold_items.json scored
it (per user, all of a user's new items relevant at once), to relate to that file's numbers.
Results: bench/results/new_items.json, docs/img/new_items_frontier.png.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench.common import RESULTS, movielens, save, work_dir
from distill.evaluation.harness import metrics_from_ranks, ranks_of_targets
from distill.evaluation.new_items import NewItemTargets, calibrate, evaluate_new_items, warm_ndcg
from distill.student import stage
from distill.student.content import ContentConfig
from distill.student.jobs import plain_kd, run_jobs, train_job
from distill.student.run import content_tower, place_items
from distill.studies.new_item_rows import NewItemsPlan, scorer_at, teacher_scorer
from distill.teacher.cache import TeacherCache
from distill.teacher.soft_labels import SoftLabels
from distill.teacher.stage import run_teacher
from distill.training.loop import available_cores
from pipelines.config import RunConfig
from storage.holdout import HALVES, hold_out_items
from storage.split import make_split
from storage.workdir import WorkDir

LEVERS = {  # each changes one setting of the default content tower
    "default": {},
    "no teacher KD (alpha 0)": {"alpha": 0.0},
    "alpha 2": {"alpha": 2.0},
    "item dropout 0.1": {"item_dropout": 0.1},
    "item dropout 0.5": {"item_dropout": 0.5},
    "hidden layer 128": {"hidden": 128},
}
SCALES = [0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.25, 1.5]


def views(result) -> dict:
    return {
        v: {m: round(result.view(v).metrics[m], 5) for m in ("ndcg@10", "hr@10")}
        for v in ("warm", "new_among_new", "new_among_all")
    }


def per_user_among_new(scorer, split, targets: NewItemTargets) -> float:
    """NDCG@10 among the new items with all of a user's new items relevant at once (both
    halves, the user's whole history as input): bench/results/cold_items.json's scoring."""
    seen = targets.seen
    users = np.flatnonzero(np.diff(seen.indptr) > 0)
    scores = torch.as_tensor(np.asarray(scorer(users, "test")))[:, targets.items]
    sub = seen[users][:, targets.items]
    rows = np.repeat(np.arange(len(users)), np.diff(sub.indptr))
    pairs = (rows, sub.indices)
    ranks = ranks_of_targets(scores, (np.zeros(0, int), np.zeros(0, int)), pairs)
    return float(metrics_from_ranks(ranks, pairs, len(users), [10])["ndcg@10"].mean())


RULES = ("plain_99pct", "self_1pct", "dropoutnet_warm")


def sweep(name: str, lever: str, runs, split, plan: NewItemsPlan, floors: dict) -> list:
    """Per seed: the validation views at every scale, and the test views at the scale each rule
    picks on validation: warm NDCG@10 at least 0.99x the plain SASRec's of that seed (the
    product's rule), at most 1 % below the same model unplaced, at least the DropoutNet-style
    student's as trained."""
    out = []
    for i, run in enumerate(runs):
        at = scorer_at(run, split)
        curve = {
            s: views(evaluate_new_items(at(s), split, plan.targets, fold="valid")) for s in SCALES
        }
        picks = {}
        for rule, kwargs in (
            ("plain_99pct", {"warm_floor": floors["plain_99pct"][i]}),
            ("self_1pct", {"max_warm_loss": 0.01}),
            ("dropoutnet_warm", {"warm_floor": floors["dropoutnet_warm"][i]}),
        ):
            scale = calibrate(at, split, plan.targets, SCALES, **kwargs).scale
            test = evaluate_new_items(at(scale), split, plan.targets, fold="test")
            picks[rule] = {"scale": scale, "test": views(test), "result": test}
        out.append({"model": name, "lever": lever, "seed": run.seed, "valid": curve, **picks})
    return out


def summary(rows: list, rule: str) -> dict:
    """Mean over seeds of the test views at a rule's pick."""
    return {
        v: {
            m: round(float(np.mean([r[rule]["test"][v][m] for r in rows])), 5)
            for m in ("ndcg@10", "hr@10")
        }
        for v in ("warm", "new_among_new", "new_among_all")
    } | {"scales": [r[rule]["scale"] for r in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--holdout-seed", type=int, default=0)
    args = parser.parse_args()
    work = work_dir()
    cfg = RunConfig(work_dir=work)
    full, _ = movielens(work)
    held = hold_out_items(full, share=args.share, seed=args.holdout_seed, work_dir=work)
    dataset = held.warm
    split = make_split(dataset)
    teacher = run_teacher(cfg.teacher, dataset, split, work_dir=work, progress=False)
    cache = TeacherCache(Path(teacher.plan.cache_dir))
    halves = {h: held.targets(h) for h in HALVES}
    plan = NewItemsPlan(
        NewItemTargets(held.item_idx, halves), args.share, args.holdout_seed, cfg.content
    )
    seeds = list(range(args.seeds))
    root = WorkDir(work).students
    kd, no_kd = cfg.distill, plain_kd(cfg.distill)
    arms = {
        "SASRec (no teacher)": (cfg.sasrec, no_kd),
        "distilled student": (cfg.student, kd),
        "DropoutNet-style student": (stage.DROPOUTNET, no_kd),
    }
    jobs = [
        train_job(dataset, split, cache.fingerprint, c, k, cfg.train, s, root)
        for c, k in arms.values()
        for s in seeds
    ]
    done = run_jobs(jobs, split, cache, workers=available_cores())
    runs = {name: done[i * len(seeds) : (i + 1) * len(seeds)] for i, name in enumerate(arms)}
    item_emb = cache.vectors("items", "embedding")
    soft = SoftLabels(cache)

    floors = {
        "plain_99pct": [
            0.99 * warm_ndcg(r.scorer(split), split, plan.targets)
            for r in runs["SASRec (no teacher)"]
        ],
        "dropoutnet_warm": [
            warm_ndcg(r.scorer(split, 1.0), split, plan.targets)
            for r in runs["DropoutNet-style student"]
        ],
    }
    frontier = sweep(
        "DropoutNet-style student", "-", runs["DropoutNet-style student"], split, plan, floors
    )
    for name in ("SASRec (no teacher)", "distilled student"):
        for lever, change in LEVERS.items():
            content = ContentConfig(**{**cfg.content.model_dump(), **change})
            towered = []
            for run in runs[name]:
                tower = content_tower(run.model, split, item_emb, content, run.seed, soft)
                placement = place_items(run.model, split, item_emb, tower)
                towered.append(replace(run, placement=placement, content=tower))
            frontier += sweep(name, lever, towered, split, plan, floors)
            print(name, lever, summary(frontier[-len(seeds) :], "plain_99pct"), flush=True)
    fixed = {
        "teacher (heads' text projection for new items)": teacher_scorer(cache, split),
    }
    counts = np.asarray(split.train.sum(axis=0)).ravel().astype(np.float32)
    oracle = counts.copy()
    oracle[held.item_idx] = np.asarray((halves["valid"] + halves["test"]).sum(axis=0)).ravel()[
        held.item_idx
    ]
    fixed["oracle popularity (the held-out counts: future knowledge)"] = lambda users, fold: (
        np.broadcast_to(oracle, (len(users), len(oracle)))
    )
    fixed_rows = {
        name: {
            fold: views(evaluate_new_items(s, split, plan.targets, fold=fold)) for fold in HALVES
        }
        for name, s in fixed.items()
    }
    distilled_default = [
        r for r in frontier if r["model"] == "distilled student" and r["lever"] == "default"
    ]
    per_user = {
        "distilled student (default tower, the product's rule)": float(
            np.mean(
                [
                    per_user_among_new(
                        scorer_at(run, split)(r["plain_99pct"]["scale"]), split, plan.targets
                    )
                    for run, r in zip(runs["distilled student"], distilled_default, strict=True)
                ]
            )
        ),
        "oracle popularity": per_user_among_new(fixed[list(fixed)[-1]], split, plan.targets),
    }
    table = []
    for model, lever in dict.fromkeys((r["model"], r["lever"]) for r in frontier):
        group = [r for r in frontier if (r["model"], r["lever"]) == (model, lever)]
        table.append({"model": model, "lever": lever, **{k: summary(group, k) for k in RULES}})
    for r in frontier:
        for rule in RULES:
            r[rule].pop("result")
    _plot(frontier)
    save(
        "new_items",
        {
            "share": args.share,
            "holdout_seed": args.holdout_seed,
            "seeds": seeds,
            "dataset": dataset.ref,
            "items": int(len(held.item_idx)),
            "targets": {h: int(m.nnz) for h, m in halves.items()},
            "teacher_fingerprint": cache.fingerprint,
            "content": cfg.content.model_dump(),
            "scales": SCALES,
            "table": table,
            "fixed": fixed_rows,
            "among_new_per_user": per_user,
            "frontier": frontier,
        },
    )


def _plot(frontier: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (model, lever), style in (
        (("distilled student", "default"), "o-"),
        (("distilled student", "no teacher KD (alpha 0)"), "s--"),
        (("SASRec (no teacher)", "default"), "^-"),
        (("DropoutNet-style student", "-"), "x-"),
    ):
        rows = [r for r in frontier if r["model"] == model and r["lever"] == lever]
        if not rows:
            continue
        warm = [np.mean([r["valid"][s]["warm"]["ndcg@10"] for r in rows]) for s in SCALES]
        new = [np.mean([r["valid"][s]["new_among_all"]["hr@10"] for r in rows]) for s in SCALES]
        ax.plot(warm, new, style, label=f"{model}, {lever}" if lever != "-" else model)
    ax.set_xlabel("warm validation NDCG@10")
    ax.set_ylabel("new among all: validation HR@10")
    ax.set_title("New items vs warm quality, content scale 0.6 ... 1.5 (mean over seeds)")
    ax.legend(fontsize=7)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    out = RESULTS.parents[1] / "docs" / "img" / "new_items_frontier.png"
    out.write_bytes(buf.getvalue())


if __name__ == "__main__":
    main()
