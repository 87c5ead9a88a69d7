"""The synthetic generator and the scale benchmark's parts (the benchmark itself runs in
`make bench-scale`)."""

from __future__ import annotations

import subprocess
import sys
import time

import polars as pl
import pytest

from bench import synthetic
from bench.scale import PeakRss, recipe_config, zero_shot_config
from bench.scale_stages import exponents
from distill.student.jobs import plain_kd
from pipelines.config import RunConfig
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


def test_the_zero_shot_run_has_the_recipes_budget_on_the_same_users(tmp_path):
    """The row to beat: the same training loop (epoch budget, schedule, rate, batch), the same
    evaluated users and plain SASRec settings: its plain rows are the recipe run's checkpoints."""
    files = synthetic.generate(0.05, tmp_path / "files")
    recipe = recipe_config(10, tmp_path, files, seeds=2)
    ours, regime = RunConfig.model_validate(recipe).for_catalog(20_000)
    theirs, _ = RunConfig.model_validate(zero_shot_config(recipe, 7)).for_catalog(20_000)
    assert regime.regime == "sampled"
    assert (theirs.sasrec, theirs.split) == (ours.sasrec, ours.split)
    assert (theirs.train.max_epochs, theirs.train.schedule) == (7, "cosine")
    assert theirs.train == ours.train.model_copy(update={"max_epochs": 7})
    assert plain_kd(theirs.distill) == plain_kd(ours.distill)
    assert theirs.teacher.adapt.mode == "none" and theirs.student.kind == "two_tower"
    assert theirs.work_dir == ours.work_dir and theirs.seeds == [0, 1]
    assert not theirs.publish and theirs.model_name != ours.model_name


def test_peak_rss_counts_the_child_processes(tmp_path):
    code = "import time; b = bytearray(300 * 2**20); time.sleep(1.5)"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {code!r}])",
        ]
    )
    t0 = time.perf_counter()
    rss = PeakRss(parent.pid, every=0.1)
    parent.wait()
    assert rss.stop() > 300 * 2**20
    assert len(rss.processes) == 2 and max(p["rss_mb"] for p in rss.processes) > 300
    assert 0 < rss.at_seconds <= time.perf_counter() - t0


def test_exponents_are_log_log_slopes():
    """bench/scale_stages.py (the zero-shot recipe's stage study)."""
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
