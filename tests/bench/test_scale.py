"""The synthetic generator and the scale benchmark's exponent fit (the benchmark itself runs in
`make bench-scale`)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from bench import synthetic
from bench.scale import exponents
from storage.datasets import DatasetConfig, ingest, load_dataset


def test_synthetic_catalog_is_seeded_shaped_and_ingestible(tmp_path):
    a = synthetic.generate(0.5, tmp_path / "a")
    b = synthetic.generate(0.5, tmp_path / "b")
    assert a["interactions"].read_bytes() == b["interactions"].read_bytes()  # seeded
    inter, items = pl.read_parquet(a["interactions"]), pl.read_parquet(a["items"])
    users, n_items, n_inter = synthetic.sizes(0.5)
    assert inter["user_id"].n_unique() == users and items.height == n_items
    assert 0.7 * n_inter <= inter.height <= n_inter  # repeats dropped; heavy users capped
    per_user = inter.group_by("user_id").len()["len"]
    assert per_user.min() >= 15 and per_user.max() > 3 * per_user.median()  # heavy tail
    per_item = inter.group_by("item_id").len()["len"].sort(descending=True)
    assert per_item[0] > 10 * per_item[len(per_item) // 2]  # a few items are very popular
    assert (
        inter.select(pl.col("timestamp").diff().over("user_id") >= 0).drop_nulls().to_series().all()
    )
    assert items["title"].str.contains(r"\(\d{4}\)$").all()
    result = ingest(DatasetConfig(name="syn", source="files", **a), work_dir=tmp_path / "work")
    dataset = load_dataset(tmp_path / "work", "syn", result.version)
    assert dataset.n_users == users and dataset.interactions().height == inter.height


def test_exponents_are_log_log_slopes():
    sizes = [
        {
            "interactions": n,
            "stages": {"lin": n / 1e3, "quad": (n / 1e3) ** 2, "student_train": 9.0},
            "student_epoch_seconds": n / 1e4,
        }
        for n in (1_000, 10_000, 100_000)
    ]
    fitted = exponents(sizes)
    assert fitted["lin"] == pytest.approx(1.0, abs=1e-3)
    assert fitted["quad"] == pytest.approx(2.0, abs=1e-3)
    assert fitted["student_train"] == pytest.approx(1.0, abs=1e-3)  # per epoch, not the total
    assert math.isfinite(fitted["lin"])
