"""The item-cold-start protocol: new items, ranked among new items and among all items.

With `split.new_items` a seeded share of the catalog is held out of training with all its
interactions (`storage/holdout.py`): the items stay in the catalog, known by their text alone, as
on the night they arrive. Every report row is then scored three ways, by full ranking:

  warm            the usual leave-one-out test (`distill.evaluation.harness`), over every item;
  new_among_new   each (user, new item) interaction is one target, ranked among the new items:
                  which new item to show;
  new_among_all   the same targets ranked among all items: does a new item reach the list a
                  user is served;
  mixed           what a user gets: every held-out interaction of the user in the fold (the next
                  warm item and the user's new items of that half) as the targets of one full
                  ranking over every item, new items competing with warm ones (NDCG@10 with one
                  gain per target, HR@10 = any target in the top 10). The user's held-out items of
                  the other half are left out of it, like the input.

A new-item target is ranked from the user's fold input (the standard protocol's: train items for
"valid", train + validation items for "test"), one target at a time, with the user's whole known
history and every other held-out item of the user (both halves, the same half's other targets
included) left out of that ranking; per-target HR@10 and NDCG@10 are averaged per
user, so paired tests pair users. Ties (a model that gives every new item the same score) are
broken in one seeded random order of the items, not by item index. The new items are drawn into
a validation half, on which settings are chosen, and a test half, on which results are quoted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from distill.evaluation.harness import EvalResult, Scorer, metrics_from_ranks, ranks_of_targets
from storage.split import Split

VIEWS = ("warm", "new_among_new", "new_among_all", "mixed")
TIE_ORDER_SEED = 20_261_204


@dataclass(frozen=True)
class NewItemTargets:
    """The held-out interactions in the split's indices: `halves["valid"|"test"]` are
    (users x items) 0/1 matrices of each half's targets; `items` every new item (sorted)."""

    items: np.ndarray
    halves: dict[str, sp.csr_matrix]

    @property
    def seen(self) -> sp.csr_matrix:
        """Every held-out interaction of a user, both halves."""
        return (self.halves["valid"] + self.halves["test"]).tocsr()

    def users(self, fold: str) -> np.ndarray:
        return np.flatnonzero(np.diff(self.halves[fold].indptr) > 0)


@dataclass(frozen=True)
class NewItemResult:
    """One model's three views of one fold (EvalResults with per-user arrays)."""

    warm: EvalResult
    new_among_new: EvalResult
    new_among_all: EvalResult
    mixed: EvalResult

    def view(self, name: str) -> EvalResult:
        return getattr(self, name)


def per_target_metrics(ranks: torch.Tensor, rows: np.ndarray, n_rows: int) -> dict[str, np.ndarray]:
    """Per row, the mean over its targets of HR@10 and NDCG@10 (one relevant item a target)."""
    r = ranks.to(torch.float64).numpy()
    hit = (r < 10).astype(np.float64)
    counts = np.maximum(np.bincount(rows, minlength=n_rows), 1).astype(np.float64)
    return {
        name: np.bincount(rows, weights=gain, minlength=n_rows) / counts
        for name, gain in (("hr@10", hit), ("ndcg@10", hit / np.log2(r + 2.0)))
    }


def _pairs(matrix: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sub = matrix[users]
    return np.repeat(np.arange(len(users)), np.diff(sub.indptr)), sub.indices.astype(np.int64)


def evaluate_new_items(
    scorer: Scorer,
    split: Split,
    targets: NewItemTargets,
    *,
    fold: str = "test",
    batch_size: int = 512,
) -> NewItemResult:
    """Score one model the three ways on `fold` ("valid" or "test"; the new items' half)."""
    n_items = split.n_items
    order = np.random.default_rng(TIE_ORDER_SEED).permutation(
        n_items
    )  # column c holds item order[c]
    column = np.empty(n_items, dtype=np.int64)
    column[order] = np.arange(n_items)
    new_column = np.full(n_items, -1, dtype=np.int64)
    new_column[targets.items] = np.arange(len(targets.items))
    new_order = np.argsort(column[targets.items], kind="stable")  # new items in the tie order
    history, seen = split.matrix("train", "valid", "test"), targets.seen
    users = targets.users(fold)
    per_user: dict[str, dict[str, list[np.ndarray]]] = {v: {} for v in VIEWS}
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = _tensor(scorer(batch, fold))
        t = _pairs(targets.halves[fold], batch)
        others = _pairs(seen, batch)  # every held-out item of the user: the targets included
        among_new = scores[:, targets.items[new_order]]
        position = np.empty(len(new_order), dtype=np.int64)
        position[new_order] = np.arange(len(new_order))
        ranks = ranks_of_targets(
            among_new,
            (others[0], position[new_column[others[1]]]),
            (t[0], position[new_column[t[1]]]),
            one_target_at_a_time=True,
        )
        _add(per_user["new_among_new"], per_target_metrics(ranks, t[0], len(batch)))
        h = _pairs(history, batch)
        exclude = (np.concatenate([h[0], others[0]]), column[np.concatenate([h[1], others[1]])])
        ranks = ranks_of_targets(
            scores[:, order], exclude, (t[0], column[t[1]]), one_target_at_a_time=True
        )
        _add(per_user["new_among_all"], per_target_metrics(ranks, t[0], len(batch)))
    warm = _warm(scorer, split, targets.seen, fold, order, batch_size)
    return NewItemResult(
        warm,
        _result(per_user["new_among_new"], users),
        _result(per_user["new_among_all"], users),
        _mixed(scorer, split, targets, fold, order, batch_size),
    )


def _mixed(
    scorer: Scorer,
    split: Split,
    targets: NewItemTargets,
    fold: str,
    order: np.ndarray,
    batch_size: int,
) -> EvalResult:
    """The fold's warm target and the user's new items of that half, ranked together over every
    item (the standard protocol's several targets of one list); the fold input and the user's
    held-out items of the other half left out."""
    column = np.empty(len(order), dtype=np.int64)
    column[order] = np.arange(len(order))
    other = "test" if fold == "valid" else "valid"
    wanted = (split.matrix(fold) + targets.halves[fold]).tocsr()
    wanted.data[:] = 1
    left_out = (split.inputs(fold) + targets.halves[other]).tocsr()
    users = np.flatnonzero(np.diff(wanted.indptr) > 0)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = _tensor(scorer(batch, fold))
        t, e = _pairs(wanted, batch), _pairs(left_out, batch)
        t = (t[0], column[t[1]])
        ranks = ranks_of_targets(scores[:, order], (e[0], column[e[1]]), t)
        metrics = metrics_from_ranks(ranks, t, len(batch), [10])
        _add(parts, {k: metrics[k] for k in ("hr@10", "ndcg@10")})
    return _result(parts, users)


def _warm(
    scorer: Scorer,
    split: Split,
    seen: sp.csr_matrix,
    fold: str,
    order: np.ndarray,
    batch_size: int,
) -> EvalResult:
    """The leave-one-out fold on warm items over every item; a user's held-out interactions
    are positives, not negatives, so they are left out of the ranking like the fold's input."""
    column = np.empty(len(order), dtype=np.int64)
    column[order] = np.arange(len(order))
    inputs, target = split.inputs(fold), split.matrix(fold)
    users = split.evaluated_users(fold)
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        scores = _tensor(scorer(batch, fold))
        t = _pairs(target, batch)
        e_in, e_new = _pairs(inputs, batch), _pairs(seen, batch)
        exclude = (np.concatenate([e_in[0], e_new[0]]), column[np.concatenate([e_in[1], e_new[1]])])
        t = (t[0], column[t[1]])
        metrics = metrics_from_ranks(
            ranks_of_targets(scores[:, order], exclude, t), t, len(batch), [10]
        )
        _add(parts, {k: metrics[k] for k in ("hr@10", "ndcg@10")})
    return _result(parts, users)


def _tensor(scores: np.ndarray | torch.Tensor) -> torch.Tensor:
    if not torch.is_tensor(scores):
        scores = torch.from_numpy(np.array(scores, dtype=np.float32))
    return scores.detach().cpu().to(torch.float32)


def _add(into: dict[str, list[np.ndarray]], metrics: dict[str, np.ndarray]) -> None:
    for name, values in metrics.items():
        into.setdefault(name, []).append(values)


def _result(parts: dict[str, list[np.ndarray]], users: np.ndarray) -> EvalResult:
    arrays = {k: np.concatenate(v) for k, v in sorted(parts.items())}
    return EvalResult({k: float(v.mean()) for k, v in arrays.items()}, arrays, users)


@dataclass(frozen=True)
class Calibration:
    """The scale a content path serves its cold items at, chosen on the validation half."""

    scale: float
    result: NewItemResult  # its validation result at that scale
    floor: float | None  # the validation warm NDCG@10 it had to keep (None: no floor, "mixed")
    floor_met: bool  # False: no scale kept the floor; `scale` is then the smallest tried


def best_mixed(
    scorer_at: Callable[[float | None], Scorer],
    split: Split,
    targets: NewItemTargets,
    scales: Sequence[float],
) -> Calibration:
    """The product's rule: the scale with the best validation *mixed* NDCG@10 (what a user gets
    when new items compete with warm ones in one list); ties to the smaller scale."""
    tried = [(s, evaluate_new_items(scorer_at(s), split, targets, fold="valid")) for s in scales]
    scale, result = max(tried, key=lambda sr: (sr[1].mixed.metrics["ndcg@10"], -sr[0]))
    return Calibration(scale, result, None, floor_met=True)


def calibrate(
    scorer_at: Callable[[float | None], Scorer],
    split: Split,
    targets: NewItemTargets,
    scales: Sequence[float],
    *,
    max_warm_loss: float = 0.0,
    warm_floor: float | None = None,
) -> Calibration:
    """The scale at which a content path serves its cold items, chosen on the validation half:
    the one with the best validation new_among_all NDCG@10 among those whose validation warm
    NDCG@10 stays at or above a floor. The floor is `warm_floor`, else the same model with its
    cold items unplaced (`scorer_at(None)`) less `max_warm_loss`. When no scale keeps the
    floor the result says so (`floor_met` False, reported as "floor unmet") and carries the
    smallest scale, the nearest to it."""
    if warm_floor is None:
        warm_floor = (1 - max_warm_loss) * warm_ndcg(scorer_at(None), split, targets)
    tried = [(s, evaluate_new_items(scorer_at(s), split, targets, fold="valid")) for s in scales]
    allowed = [(s, r) for s, r in tried if r.warm.metrics["ndcg@10"] >= warm_floor]
    if not allowed:
        scale, result = min(tried, key=lambda sr: sr[0])
        return Calibration(scale, result, warm_floor, floor_met=False)
    scale, result = max(allowed, key=lambda sr: (sr[1].new_among_all.metrics["ndcg@10"], -sr[0]))
    return Calibration(scale, result, warm_floor, floor_met=True)


def warm_ndcg(scorer: Scorer, split: Split, targets: NewItemTargets, fold: str = "valid") -> float:
    """The warm view's NDCG@10 alone (the reference a calibration keeps to)."""
    order = np.random.default_rng(TIE_ORDER_SEED).permutation(split.n_items)
    return _warm(scorer, split, targets.seen, fold, order, 512).metrics["ndcg@10"]
