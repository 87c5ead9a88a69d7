"""Deterministic train/valid/test splits, stored as Parquet next to the dataset version.

leave-one-out: per user, interactions sorted by (timestamp, item_idx); the last -> test, the
  second-last -> valid, the rest -> train. Users with fewer than 3 interactions go wholly to train.
as-of: only interactions strictly before the cut-off are kept, then split leave-one-out, so a
  model built "as of" a day never sees anything from that day on (used by backfills).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import polars as pl
import scipy.sparse as sp

from storage.atomic import write_parquet
from storage.datasets import Dataset, user_sequences
from storage.schema import SPLIT

MIN_INTERACTIONS_FOR_HOLDOUT = 3
EVAL_SAMPLE_SEED = 20_240_601


def leave_one_out(interactions: pl.DataFrame) -> pl.DataFrame:
    """Assign folds. Input needs user_idx, item_idx, timestamp; output follows `schema.SPLIT`."""
    ordered = interactions.select("user_idx", "item_idx", "timestamp").sort(
        "user_idx", "timestamp", "item_idx"
    )
    ordered = ordered.with_columns(
        pl.int_range(pl.len()).over("user_idx").alias("_pos"),
        pl.len().over("user_idx").alias("_n"),
    )
    from_end = pl.col("_n") - pl.col("_pos")  # 1 for the last interaction
    fold = (
        pl.when(pl.col("_n") < MIN_INTERACTIONS_FOR_HOLDOUT)
        .then(pl.lit("train"))
        .when(from_end == 1)
        .then(pl.lit("test"))
        .when(from_end == 2)
        .then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    return ordered.with_columns(fold.alias("fold")).drop("_pos", "_n")


def as_of(interactions: pl.DataFrame, cutoff: int) -> pl.DataFrame:
    """Leave-one-out over the interactions strictly before `cutoff` (epoch seconds)."""
    return leave_one_out(interactions.filter(pl.col("timestamp") < cutoff))


def split_id(cutoff: int | None) -> str:
    return "loo" if cutoff is None else f"asof-{int(cutoff)}"


@dataclass(frozen=True)
class Split:
    """Folds of one dataset version as index arrays and sparse matrices. `eval_users`: evaluate
    on a fixed seeded sample of at most this many users per fold (None = every user), which keeps
    full-ranking evaluation linear in the catalog on large datasets."""

    frame: pl.DataFrame
    n_users: int
    n_items: int
    name: str = "loo"
    eval_users: int | None = None
    cutoff: int | None = None  # as-of cut-off (epoch seconds); None = leave-one-out on everything

    def fold(self, name: str) -> pl.DataFrame:
        return self.frame.filter(pl.col("fold") == name)

    def matrix(self, *folds: str) -> sp.csr_matrix:
        """Binary user x item CSR matrix of the given folds."""
        rows = self.frame.filter(pl.col("fold").is_in(list(folds)))
        u = rows.get_column("user_idx").to_numpy()
        i = rows.get_column("item_idx").to_numpy()
        m = sp.csr_matrix(
            (np.ones(len(u), dtype=np.float32), (u, i)), shape=(self.n_users, self.n_items)
        )
        m.data[:] = 1.0  # repeated (user, item) pairs count once
        return m

    @cached_property
    def train(self) -> sp.csr_matrix:
        return self.matrix("train")

    def users_with(self, fold: str) -> np.ndarray:
        return np.unique(self.fold(fold).get_column("user_idx").to_numpy())

    def evaluated_users(self, fold: str) -> np.ndarray:
        """The users a fold is evaluated on: every user with a target there, or a seeded sample
        of `eval_users` of them (the same sample every time, sorted)."""
        users = self.users_with(fold)
        if self.eval_users is None or len(users) <= self.eval_users:
            return users
        rng = np.random.default_rng([EVAL_SAMPLE_SEED, len(users)])
        return np.sort(rng.choice(users, size=self.eval_users, replace=False))

    def train_sequences(self) -> list[np.ndarray]:
        """Per user, train item indices in chronological order (oldest first)."""
        return self._sequences("train")

    def input_folds(self, fold: str) -> tuple[str, ...]:
        """What a model reads when it predicts `fold` (the standard leave-one-out protocol):
        everything before the target, i.e. train for valid, train + valid for test."""
        if fold == "valid":
            return ("train",)
        if fold == "test":
            return ("train", "valid")
        raise ValueError(f"fold must be 'valid' or 'test', not {fold!r}")

    def inputs(self, fold: str) -> sp.csr_matrix:
        """Binary user x item matrix of the interactions a model reads to predict `fold`."""
        return self.train if self.input_folds(fold) == ("train",) else self._test_inputs

    @cached_property
    def _test_inputs(self) -> sp.csr_matrix:
        return self.matrix(*self.input_folds("test"))

    def input_sequences(self, fold: str) -> list[np.ndarray]:
        """Per user, the items a model reads to predict `fold`, oldest first."""
        return self._sequences(*self.input_folds(fold))

    def _sequences(self, *folds: str) -> list[np.ndarray]:
        return user_sequences(self.frame.filter(pl.col("fold").is_in(list(folds))), self.n_users)


def make_split(
    dataset: Dataset, *, cutoff: int | None = None, eval_users: int | None = None
) -> Split:
    """Build (or load the stored) split for a dataset version; `eval_users` as in `Split`."""
    name = split_id(cutoff)
    path = dataset.path / "splits" / f"{name}.parquet"
    if path.exists():
        frame = pl.read_parquet(path)
    else:
        inter = dataset.interactions()
        frame = leave_one_out(inter) if cutoff is None else as_of(inter, cutoff)
        write_parquet(path, frame.to_arrow().cast(SPLIT))
        frame = pl.read_parquet(path)
    return Split(
        frame=frame,
        n_users=dataset.n_users,
        n_items=dataset.n_items,
        name=name,
        eval_users=eval_users,
        cutoff=None if cutoff is None else int(cutoff),
    )
