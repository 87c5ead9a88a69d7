from __future__ import annotations

import polars as pl

from storage.datasets import ingest, load_dataset
from storage.split import as_of, leave_one_out, make_split


def _folds(split_frame: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame) -> dict:
    named = split_frame.join(items.select("item_idx", "item_id"), on="item_idx").join(
        users.select("user_idx", "user_id"), on="user_idx"
    )
    out: dict = {}
    for row in named.sort("user_id", "timestamp", "item_idx").iter_rows(named=True):
        out.setdefault(row["user_id"], {}).setdefault(row["fold"], []).append(row["item_id"])
    return out


def test_leave_one_out_boundaries_and_ties(tiny_config, work):
    ds = load_dataset(work, "tiny", ingest(tiny_config, work_dir=work).version)
    folds = _folds(leave_one_out(ds.interactions()), ds.items(), ds.users())
    assert folds["u1"] == {"train": ["a", "b"], "valid": ["c"], "test": ["d"]}
    assert folds["u2"] == {"train": ["b"], "valid": ["c"], "test": ["e"]}
    assert folds["u3"] == {"train": ["a", "f"]}  # fewer than 3 interactions: all train
    # u4: b and c tie at t=300; the tie is broken by item index (b < c), so c is later
    assert folds["u4"] == {"train": ["e", "d", "b"], "valid": ["c"], "test": ["a"]}


def test_as_of_drops_everything_from_the_cutoff_on(tiny_config, work):
    ds = load_dataset(work, "tiny", ingest(tiny_config, work_dir=work).version)
    folds = _folds(as_of(ds.interactions(), cutoff=300), ds.items(), ds.users())
    assert folds["u4"] == {"train": ["e", "d"]}  # only t=100, 200 remain: < 3, all train
    assert folds["u1"] == {"train": ["a", "b"], "valid": ["c"], "test": ["d"]}


def test_split_is_stored_deterministically(tiny_config, work):
    ds = load_dataset(work, "tiny", ingest(tiny_config, work_dir=work).version)
    first = make_split(ds)
    assert (ds.path / "splits" / "loo.parquet").exists()
    assert make_split(ds).frame.equals(first.frame)
    assert first.train.shape == (4, 6) and first.train.nnz == 2 + 1 + 2 + 3
    seqs = first.train_sequences()
    assert [len(s) for s in seqs] == [2, 1, 2, 3]
    assert make_split(ds, cutoff=300).name == "asof-300"
