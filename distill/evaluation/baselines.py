"""Classic baselines, fitted on the train fold: Popularity, ItemKNN (cosine) and EASE.

Each is fitted with `fit(train)` and scores users from their input rows with
`scores(inputs) -> (B, n_items)`; `scorer(model, split)` adapts that to the shared evaluation
harness in `distill.evaluation.harness`, which hands each fold its own input (train items for
validation, train + validation items for test).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from distill.evaluation.harness import EvalResult, Scorer, evaluate
from storage.split import Split

EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0)
DENSE_ITEM_LIMIT = 20_000  # ItemKNN and EASE hold an (items x items) float32 matrix
log = logging.getLogger(__name__)


class Popularity:
    """Scores every item by its train interaction count (the same list for every user)."""

    name = "Popularity"

    def fit(self, train: sp.csr_matrix) -> Popularity:
        self.counts = np.asarray(train.sum(axis=0), dtype=np.float32).ravel()  # (I,)
        return self

    def scores(self, inputs: sp.csr_matrix) -> np.ndarray:
        return np.broadcast_to(self.counts, (inputs.shape[0], self.counts.shape[0]))

    @property
    def n_params(self) -> int:
        return int(self.counts.shape[0])


class ContentKNN:
    """Content only, from the (unit) LM item embeddings; needs no interaction with an item, so it
    places new ones (the new-items protocol's content baseline). `k` None: a user is the mean of
    the embeddings of the items they read, and an item scores by its cosine with it. `k` an
    integer: item-kNN on content, an item scores by the summed cosine of the user's items among
    its k most similar items."""

    name = "Content kNN"

    def __init__(self, item_emb: np.ndarray, k: int | None = None) -> None:
        norms = np.linalg.norm(item_emb, axis=1, keepdims=True)
        self.unit = (item_emb / np.maximum(norms, 1e-12)).astype(np.float32)  # (I, T)
        self.k = k
        self.neighbours: sp.csr_matrix | None = None

    def fit(self, train: sp.csr_matrix) -> ContentKNN:
        if self.k is not None:  # nothing is learned from interactions: the content graph only
            sim = self.unit @ self.unit.T  # (I, I)
            np.fill_diagonal(sim, 0.0)
            k = min(self.k, sim.shape[1] - 1)
            drop = np.argpartition(-sim, k, axis=1)[:, k:]  # all but each row's top k
            np.put_along_axis(sim, drop, 0.0, axis=1)
            self.neighbours = sp.csr_matrix(sim.T)  # column j: item j's neighbours
        return self

    def scores(self, inputs: sp.csr_matrix) -> np.ndarray:
        if self.neighbours is not None:
            return np.asarray((inputs.astype(np.float32) @ self.neighbours).todense())
        profile = np.asarray(inputs.astype(np.float32) @ self.unit)  # (B, T), sums
        norms = np.linalg.norm(profile, axis=1, keepdims=True)
        return (profile / np.maximum(norms, 1e-12)) @ self.unit.T

    @property
    def n_params(self) -> int:
        return 0


class ItemKNN:
    """Item-based CF: score = X_u · S with S the cosine item-item similarity of train columns.

    `k` keeps each item's k most similar neighbours (None = all); the diagonal is zero.
    """

    name = "ItemKNN"

    def __init__(self, k: int | None = None) -> None:
        self.k = k

    def fit(self, train: sp.csr_matrix) -> ItemKNN:
        x = train.astype(np.float32)
        norms = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())  # (I,)
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        xn = x @ sp.diags(inv)
        sim = (xn.T @ xn).toarray()  # (I, I)
        np.fill_diagonal(sim, 0.0)
        if self.k is not None and self.k < sim.shape[0]:
            drop = np.argpartition(-sim, self.k, axis=0)[self.k :]  # rows outside the top-k
            np.put_along_axis(sim, drop, 0.0, axis=0)
        self.sim = sim.astype(np.float32)
        return self

    def scores(self, inputs: sp.csr_matrix) -> np.ndarray:
        return np.asarray(inputs.astype(np.float32) @ self.sim)

    @property
    def n_params(self) -> int:
        return int(np.count_nonzero(self.sim))


class EASE:
    """EASE (Steck, 2019): B = I - P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, diag(B) = 0."""

    name = "EASE"

    def __init__(self, lam: float = 200.0) -> None:
        if lam <= 0:
            raise ValueError("EASE lambda must be > 0")
        self.lam = lam

    def fit(self, train: sp.csr_matrix) -> EASE:
        x = train.astype(np.float64)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.lam
        del x
        b = spd_inverse(gram)  # P, in the gram's memory: one n x n float64 at a time
        b /= -np.diag(b).copy()[None, :]  # B = -P diag(1/diag(P)), off the diagonal
        np.fill_diagonal(b, 0.0)
        self.weights = b.astype(np.float32)
        return self

    def scores(self, inputs: sp.csr_matrix) -> np.ndarray:
        return np.asarray(inputs.astype(np.float32) @ self.weights)

    @property
    def n_params(self) -> int:
        return int(self.weights.size)


def spd_inverse(a: np.ndarray, rows: int = 1024) -> np.ndarray:
    """The inverse of a symmetric positive-definite float64 matrix, overwriting `a`: Cholesky
    (LAPACK potrf + potri), half the flops of a general inverse (EASE's fit at 13K items: its
    one O(n^3) step). LAPACK writes the lower triangle; the upper is mirrored `rows` at a time
    (no n x n temporaries)."""
    if not a.flags.f_contiguous:  # LAPACK works in place only on Fortran order; aᵀ = a
        a = a.T
    factor, info = lapack.dpotrf(a, lower=True, overwrite_a=True)
    if info == 0:
        inverse, info = lapack.dpotri(factor, lower=True, overwrite_c=True)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix is not positive definite (LAPACK info {info})")
    n = len(inverse)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        upper = np.triu(np.ones((stop - start, n - start), dtype=bool), k=1)
        block = inverse[start:stop, start:]
        block[upper] = inverse[start:, start:stop].T[upper]
    return inverse


def scorer(model: Popularity | ContentKNN | ItemKNN | EASE, split: Split) -> Scorer:
    """The model as a scorer for `distill.evaluation.harness`: each fold scored from its own input
    rows."""
    return lambda users, fold: model.scores(split.inputs(fold)[users])


def tune_ease(split: Split, lambdas: Sequence[float] = EASE_LAMBDAS) -> tuple[EASE, dict]:
    """Pick λ by validation NDCG@10; returns the fitted model and the validation curve."""
    curve = {}
    best: tuple[float, EASE] | None = None
    for lam in lambdas:
        t0 = time.perf_counter()
        model = EASE(lam).fit(split.train)
        ndcg = evaluate(scorer(model, split), split, fold="valid").primary
        curve[lam] = ndcg
        log.info(
            "EASE λ=%g: validation NDCG@10 %.4f (%d items, %.0f s)",
            lam,
            ndcg,
            split.n_items,
            time.perf_counter() - t0,
        )
        if best is None or ndcg > best[0]:
            best = (ndcg, model)
    assert best is not None
    return best[1], curve


@dataclass
class BaselineRun:
    name: str
    result: EvalResult
    params: int
    train_seconds: float
    users_per_second: float
    detail: str = ""


def run_baselines(split: Split, *, fold: str = "test") -> list[BaselineRun]:
    """Fit and evaluate every baseline with the shared harness."""
    runs = []
    makers: list[Callable[[], tuple[Popularity | ItemKNN | EASE, str]]] = [
        lambda: (Popularity().fit(split.train), "")
    ]
    if split.n_items <= DENSE_ITEM_LIMIT:
        makers += [
            lambda: (ItemKNN().fit(split.train), "cosine, all neighbours"),
            lambda: _tuned_ease(split),
        ]
    else:
        log.warning(
            "ItemKNN and EASE skipped: %d items is over %d (their item x item matrix would take "
            "%.1f GiB)",
            split.n_items,
            DENSE_ITEM_LIMIT,
            split.n_items**2 * 4 / 2**30,
        )
    for make in makers:
        t0 = time.perf_counter()
        model, detail = make()
        fit_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = evaluate(scorer(model, split), split, fold=fold)
        eval_s = time.perf_counter() - t1
        runs.append(
            BaselineRun(
                model.name,
                result,
                model.n_params,
                fit_s,
                len(result.users) / max(eval_s, 1e-9),
                detail,
            )
        )
    return runs


def _tuned_ease(split: Split) -> tuple[EASE, str]:
    model, curve = tune_ease(split)
    return model, f"λ={model.lam:g} (valid NDCG@10 {curve[model.lam]:.4f})"
