"""Building the report: paired comparisons of report rows, the per-user breakdowns (user activity,
test-item popularity, rare items), and the report built from every model's results."""

from __future__ import annotations

import numpy as np

from distill.evaluation.report.model import ModelRow, Report
from distill.evaluation.stats import Comparison, paired
from storage.split import Split


def paired_test(treated: ModelRow, control: ModelRow, metric: str = "ndcg@10") -> Comparison:
    """The seed-aware paired comparison of two report rows (`distill.evaluation.stats`)."""
    return paired(
        treated.results, control.results, names=(treated.model, control.model), metric=metric
    )


def activity_buckets(split: Split, users: np.ndarray) -> tuple[np.ndarray, dict[str, str]]:
    """cold / medium / heavy by train-history length terciles; returns labels and thresholds."""
    lengths = np.diff(split.train.indptr)[users]
    lo, hi = np.quantile(lengths, [1 / 3, 2 / 3])
    labels = np.where(lengths <= lo, "cold", np.where(lengths <= hi, "medium", "heavy"))
    return labels, {
        "cold": f"<= {lo:.0f} train items",
        "medium": f"<= {hi:.0f}",
        "heavy": f"> {hi:.0f}",
    }


RARE_MAX = 5  # an item with at most this many train interactions is rare


def popularity_buckets(split: Split, users: np.ndarray, fold: str = "test") -> np.ndarray:
    """head (top 20% items by train count) / torso (next 30%) / tail, by each user's test item."""
    counts = np.asarray(split.train.sum(axis=0)).ravel()
    rank = np.empty(len(counts), dtype=np.int64)
    rank[np.argsort(-counts, kind="stable")] = np.arange(len(counts))
    frac = rank[_first_targets(split, users, fold)] / len(counts)
    return np.where(frac < 0.2, "head", np.where(frac < 0.5, "torso", "tail"))


def rare_items(split: Split, users: np.ndarray, fold: str = "test") -> np.ndarray:
    """(U,) bool: the user's test item has at most RARE_MAX train interactions."""
    counts = np.asarray(split.train.sum(axis=0)).ravel()
    return counts[_first_targets(split, users, fold)] <= RARE_MAX


def _first_targets(split: Split, users: np.ndarray, fold: str) -> np.ndarray:
    target = split.matrix(fold)[users]
    return np.array([target.indices[target.indptr[i]] for i in range(len(users))], dtype=np.int64)


BUCKETS = ("cold", "medium", "heavy", "head", "torso", "tail", "rare")


def breakdown(
    rows: list[ModelRow], buckets: dict[str, np.ndarray], metric: str = "ndcg@10"
) -> dict:
    """Each row's mean `metric` over the users of each bucket (a bool mask over the users; buckets
    may overlap: rare items are tail items too)."""
    out: dict[str, dict] = {}
    for bucket, keep in buckets.items():
        if keep.any():
            out[bucket] = {
                "users": int(keep.sum()),
                **{
                    row.model: float(
                        np.mean([r.per_user[metric][keep].mean() for r in row.results])
                    )
                    for row in rows
                },
            }
    return out


def build_report(
    *,
    dataset: str,
    split: Split,
    seeds: list[int],
    rows: list[ModelRow],
    settings: dict | None = None,
    tests: dict[str, Comparison] | None = None,
) -> Report:
    """The report of every model's results on one split: a row each, the breakdowns by user
    activity and test-item popularity, the paired `tests`; `bars.finish` completes it."""
    users = rows[0].results[0].users
    activity, thresholds = activity_buckets(split, users)
    popularity = popularity_buckets(split, users)
    return Report(
        dataset=dataset,
        split="leave-one-out" if split.name == "loo" else split.name,
        seeds=seeds,
        rows=[r.row() for r in rows],
        breakdown={
            "activity": breakdown(rows, {b: activity == b for b in BUCKETS[:3]}),
            "activity_thresholds": thresholds,
            "popularity": breakdown(
                rows,
                {b: popularity == b for b in BUCKETS[3:6]} | {"rare": rare_items(split, users)},
            ),
        },
        settings=dict(settings or {}),
        tests=dict(tests or {}),
    )
