"""The nightly inbox merged into a new dataset version: new users and new items arrive with it."""

from __future__ import annotations

import polars as pl

from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.inbox import inbox_dir, ingest_inbox


def test_a_night_brings_a_new_user_and_a_new_item(tiny_files, work):
    config = DatasetConfig(name="tiny", source="files", **tiny_files)
    base = load_dataset(work, "tiny", ingest(config, work_dir=work).version)
    folder = inbox_dir(work, "tiny")
    folder.mkdir(parents=True)
    pl.DataFrame(
        {"user_id": ["u9", "u1"], "item_id": ["g", "g"], "timestamp": [500, 501]}
    ).write_csv(folder / "interactions-1.csv")
    pl.DataFrame({"item_id": ["g"], "title": ["Eta"], "genres": ["Drama"]}).write_csv(
        folder / "items-1.csv"
    )
    result, files = ingest_inbox(work, base, config)
    assert result is not None and len(files["interactions"]) == 1
    night = load_dataset(work, "tiny", result.version)
    users = night.users()
    assert night.n_users == base.n_users + 1 and "u9" in users.get_column("user_id").to_list()
    assert users.filter(pl.col("user_id") == "u9").get_column("age").to_list() == [None]
    assert night.n_items == base.n_items + 1
    assert night.interactions().height == base.interactions().height + 2
