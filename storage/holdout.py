"""New items held out of training: the data of the item-cold-start protocol.

`hold_out_items` draws a seeded share of a dataset version's items and writes a derived version
without their interactions. The items stay in the catalog, known by their text alone, as a new
item is on the night it arrives (the nightly inbox's items file puts it there before anybody has
touched it). Its held-out interactions are the targets of the new-items evaluation
(`distill/evaluation/new_items.py`), split by a second seeded draw of the items into a validation
half (settings are chosen on it) and a test half (results are quoted on it).

<work>/data/<name>.new-<share>-seed<seed>/<version>/   the derived dataset: a normal version
                                         held_out.parquet   user_id, item_id, timestamp, half
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from storage.atomic import write_parquet
from storage.datasets import Dataset, write_version
from storage.errors import DataError
from storage.sources import RawTables

HELD_OUT = "held_out.parquet"
HALVES = ("valid", "test")


@dataclass(frozen=True)
class HeldOutItems:
    """A derived dataset version (`warm`: every item, the held-out ones without interactions)
    and the held-out interactions, one row each with the item's half."""

    warm: Dataset
    share: float
    seed: int

    @classmethod
    def of(cls, dataset: Dataset) -> HeldOutItems | None:
        """The hold-out a derived dataset version was written by, or None for any other."""
        held = dataset.meta.get("source", {}).get("held_out")
        if held is None:
            return None
        return cls(dataset, float(held["share"]), int(held["seed"]))

    @cached_property
    def interactions(self) -> pl.DataFrame:
        """user_id, item_id, timestamp, half ("valid" | "test")."""
        return pl.read_parquet(self.warm.path / HELD_OUT)

    @cached_property
    def item_idx(self) -> np.ndarray:
        """Every held-out item's index in the warm dataset (sorted), both halves."""
        return self._indices(self.warm.items(), pl.col("item_id").is_in(self._ids()))

    def _ids(self) -> list[str]:
        return list(self.warm.meta["source"]["held_out"]["item_ids"])

    @staticmethod
    def _indices(items: pl.DataFrame, keep: pl.Expr) -> np.ndarray:
        return np.sort(items.filter(keep).get_column("item_idx").to_numpy().astype(np.int64))

    def targets(self, half: str) -> sp.csr_matrix:
        """(users x items) 0/1: the held-out interactions of `half`, in the warm dataset's
        indices; users the warm dataset does not have (no warm interaction) are dropped."""
        rows = (
            self.interactions if half == "all" else self.interactions.filter(pl.col("half") == half)
        )
        users = self.warm.users().select("user_id", "user_idx")
        items = self.warm.items().select("item_id", "item_idx")
        pairs = rows.join(users, on="user_id").join(items, on="item_id")
        u = pairs.get_column("user_idx").to_numpy()
        i = pairs.get_column("item_idx").to_numpy()
        shape = (self.warm.n_users, self.warm.n_items)
        matrix = sp.csr_matrix((np.ones(len(u), dtype=np.float32), (u, i)), shape=shape)
        matrix.data[:] = 1.0
        return matrix


def derived_name(name: str, share: float, seed: int) -> str:
    return f"{name}.new-{share:g}-seed{seed}"


def hold_out_items(dataset: Dataset, *, share: float, seed: int, work_dir: Path) -> HeldOutItems:
    """The derived version with a seeded `share` of the items held out (written once; the same
    arguments find it again)."""
    if not 0 < share < 1:
        raise DataError(f"the share of new items must be in (0, 1), got {share}")
    items = dataset.items()
    ids = np.sort(items.get_column("item_id").to_numpy())
    n_new = int(round(share * len(ids)))
    if n_new < 2 or n_new >= len(ids):
        raise DataError(
            f"holding out {share:g} of {dataset.ref}'s {len(ids)} items leaves {n_new} new "
            "items: at least 2 (one per half) and fewer than the catalog are needed"
        )
    rng = np.random.default_rng([seed, len(ids)])
    new = rng.choice(ids, size=n_new, replace=False)
    valid = set(rng.permutation(new)[: n_new // 2].tolist())
    inter = dataset.interactions().drop("user_idx", "item_idx")
    is_new = pl.col("item_id").is_in(new.tolist())
    held = inter.filter(is_new).select("user_id", "item_id", "timestamp")
    held = held.with_columns(
        pl.when(pl.col("item_id").is_in(sorted(valid)))
        .then(pl.lit("valid"))
        .otherwise(pl.lit("test"))
        .alias("half")
    )
    warm_inter = inter.filter(~is_new)
    users = dataset.users().drop("user_idx")
    users = users.filter(
        pl.col("user_id").is_in(warm_inter.get_column("user_id").unique().implode())
    )
    raw = RawTables(
        warm_inter,
        items.drop("item_idx"),
        users,
        {
            "interactions": f"{dataset.path / 'interactions.parquet'} minus held-out items",
            "items": str(dataset.path / "items.parquet"),
            "users": str(dataset.path / "users.parquet"),
        },
    )
    result = write_version(
        raw,
        name=derived_name(dataset.name, share, seed),
        work_dir=work_dir,
        source={
            "base": dataset.ref,
            "held_out": {"share": share, "seed": seed, "item_ids": sorted(new.tolist())},
        },
    )
    warm = Dataset(result.path)
    if not (warm.path / HELD_OUT).exists():  # idempotent: a crash between the two is repaired
        write_parquet(warm.path / HELD_OUT, held.sort("user_id", "timestamp", "item_id").to_arrow())
    return HeldOutItems(warm, share, seed)
