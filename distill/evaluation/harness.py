"""Full-ranking evaluation shared by every scorer (baselines, teacher, students).

Standard leave-one-out protocol: to predict a fold, a model reads everything before it, i.e. the
train items for validation and the train items plus the validation item for test
(`Split.inputs` / `Split.input_sequences`). A scorer is any callable
`scores(user_idx: np.ndarray, fold: str) -> (B, n_items)` array or tensor that scores from the
fold's input. For each user with targets in the evaluated fold, all items are ranked except that
input. Ties are broken by item index, as a stable sort does, so a scorer gains nothing from ties.
Metrics (per user, then averaged):
  HR@K      1 if any target is in the top K
  Recall@K  targets in the top K / number of targets
  NDCG@K    DCG@K / ideal DCG@K, gain 1 for every target
  MRR       1 / (rank of the best-ranked target), over the full ranking (not truncated)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from storage.split import Split

Scorer = Callable[[np.ndarray, str], "np.ndarray | torch.Tensor"]  # (users, fold) -> (B, I)
PRIMARY_METRIC = "ndcg@10"
DEFAULT_KS = (10, 20)
EVAL_FOLDS = ("valid", "test")  # the folds a scorer is asked to score
MAX_BATCH_CELLS = 1 << 26  # users x items scored at once (256 MiB of float32)


UserVectors = Callable[[np.ndarray, str], "np.ndarray | torch.Tensor"]  # (users, fold) -> (B, D)


def vector_scorer(user_vectors: UserVectors, item_vecs: np.ndarray | torch.Tensor) -> Scorer:
    """The scorer of every model that has user and item vectors (students, the teacher's head,
    cached teacher vectors): scores = user vector from the fold's input · item vectors. NumPy
    vectors are multiplied in NumPy, tensors in torch (without gradients)."""

    def scores(users: np.ndarray, fold: str) -> np.ndarray | torch.Tensor:
        if isinstance(item_vecs, np.ndarray):
            return torch.as_tensor(np.asarray(user_vectors(users, fold)) @ item_vecs.T)
        with torch.no_grad():
            return user_vectors(users, fold) @ item_vecs.T

    return scores


@dataclass
class EvalResult:
    """Mean metrics plus per-user arrays (aligned with `users`) for paired significance tests."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray
    primary_metric: str = PRIMARY_METRIC

    @property
    def primary(self) -> float:
        return self.metrics[self.primary_metric]


def _rows(matrix: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row-in-batch, column) pairs of the nonzeros of `matrix[users]`."""
    sub = matrix[users]
    return np.repeat(np.arange(len(users)), np.diff(sub.indptr)), sub.indices


def ranks_of_targets(
    scores: torch.Tensor,
    exclude: tuple[np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray],
    *,
    one_target_at_a_time: bool = False,
    chunk: int = 256,
) -> torch.Tensor:
    """(T,) 0-based rank of every target in its row after masking `exclude`, ties broken by
    item index as a stable descending sort would: the items scoring higher plus the tied items
    of lower index. O(T x I), no sort.

    By default targets are never masked, so a row's targets compete with each other (the
    standard protocol's several targets of one fold, scored as a list). With
    `one_target_at_a_time` each target is ranked alone: every excluded item is masked, the row's
    other targets too when they are in `exclude` (the item-cold-start protocol: one (user, new
    item) target at a time, the user's other held-out items left out)."""
    scores = scores.to(torch.float32).clone()
    t_rows, t_cols = (torch.as_tensor(a, dtype=torch.long) for a in targets)
    e_rows, e_cols = (torch.as_tensor(a, dtype=torch.long) for a in exclude)
    target_scores = scores[t_rows, t_cols]
    scores[e_rows, e_cols] = -torch.inf
    if not one_target_at_a_time:
        scores[t_rows, t_cols] = target_scores
    scores = torch.nan_to_num(scores, nan=-torch.inf)
    target_scores = torch.nan_to_num(target_scores, nan=-torch.inf)
    items = torch.arange(scores.shape[1])
    ranks = []
    for i in range(0, len(t_rows), chunk):
        rows, cols = t_rows[i : i + chunk], t_cols[i : i + chunk]
        row_scores = scores[rows]  # (chunk, I)
        mine = target_scores[i : i + chunk, None]  # (chunk, 1): its own score, masked or not
        higher = (row_scores > mine).sum(1)
        tied_before = ((row_scores == mine) & (items < cols[:, None])).sum(1)
        ranks.append(higher + tied_before)
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long)


def metrics_from_ranks(
    target_rank: torch.Tensor,
    targets: tuple[np.ndarray, np.ndarray],
    n_rows: int,
    ks: Sequence[int],
) -> dict[str, np.ndarray]:
    """Per-row metrics from the (T,) ranks of the (row, item) target pairs."""
    t_rows = torch.as_tensor(targets[0], dtype=torch.long)
    target_rank = target_rank.to(torch.float64)  # (T,)
    n_targets = torch.zeros(n_rows, dtype=torch.float64).index_add_(
        0, t_rows, torch.ones_like(target_rank)
    )
    out: dict[str, np.ndarray] = {}
    best = torch.full((n_rows,), torch.inf, dtype=torch.float64).scatter_reduce(
        0, t_rows, target_rank, reduce="amin"
    )
    out["mrr"] = (1.0 / (best + 1.0)).numpy()
    for k in ks:
        hit = (target_rank < k).to(torch.float64)
        hits = torch.zeros(n_rows, dtype=torch.float64).index_add_(0, t_rows, hit)
        dcg = torch.zeros(n_rows, dtype=torch.float64).index_add_(
            0, t_rows, hit / torch.log2(target_rank + 2.0)
        )
        ideal_n = torch.clamp(n_targets, max=k).to(torch.long)
        discounts = torch.cumsum(1.0 / torch.log2(torch.arange(k, dtype=torch.float64) + 2.0), 0)
        idcg = discounts[torch.clamp(ideal_n - 1, min=0)]
        out[f"hr@{k}"] = (hits > 0).to(torch.float64).numpy()
        out[f"recall@{k}"] = (hits / n_targets.clamp(min=1)).numpy()
        out[f"ndcg@{k}"] = (dcg / idcg).numpy()
    return out


def evaluate(
    scorer: Scorer,
    split: Split,
    *,
    fold: str = "test",
    ks: Sequence[int] = DEFAULT_KS,
    batch_size: int = 1024,
    users: np.ndarray | None = None,
) -> EvalResult:
    """Evaluate `scorer` on `fold` ("valid" or "test") of `split` by full ranking."""
    if fold not in EVAL_FOLDS:
        raise ValueError(f"fold must be 'valid' or 'test', not {fold!r}")
    target_matrix = split.matrix(fold)
    exclude_matrix = split.inputs(fold)
    all_users = split.evaluated_users(fold)
    eval_users = all_users if users is None else np.intersect1d(all_users, users)
    if len(eval_users) == 0:
        raise ValueError(
            f"no user has a {fold} item in split '{split.name}' "
            "(too little data before the cut-off?)"
        )
    per_user: dict[str, list[np.ndarray]] = {}
    batch_size = max(1, min(batch_size, MAX_BATCH_CELLS // split.n_items))  # bounded memory
    for start in range(0, len(eval_users), batch_size):
        batch = eval_users[start : start + batch_size]
        scores = scorer(batch, fold)
        if not torch.is_tensor(scores):
            scores = torch.from_numpy(np.array(scores, dtype=np.float32))  # copy: may be read-only
        if scores.shape != (len(batch), split.n_items):
            raise ValueError(
                f"scorer returned shape {tuple(scores.shape)}, "
                f"expected ({len(batch)}, {split.n_items})"
            )
        targets = _rows(target_matrix, batch)
        ranks = ranks_of_targets(scores.detach().cpu(), _rows(exclude_matrix, batch), targets)
        for name, values in metrics_from_ranks(ranks, targets, len(batch), ks).items():
            per_user.setdefault(name, []).append(values)
    arrays = {k: np.concatenate(v) for k, v in per_user.items()}
    metrics = {k: float(v.mean()) for k, v in sorted(arrays.items())}
    return EvalResult(metrics=metrics, per_user=arrays, users=eval_users)
