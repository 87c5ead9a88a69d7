from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from storage.datasets import DatasetConfig, ingest, load_dataset
from storage.errors import DataError
from tests.conftest import tiny_tables, write_tables


def test_ingest_writes_indexed_tables_and_metadata(tiny_config, work):
    result = ingest(tiny_config, work_dir=work)
    assert result.created
    ds = load_dataset(work, "tiny")
    assert ds.version == result.version and (ds.n_users, ds.n_items) == (4, 6)
    items = ds.items()
    assert items.get_column("item_idx").to_list() == list(range(6))
    assert items.filter(pl.col("item_id") == "a").get_column("genres").to_list() == [
        ["Drama", "Comedy"]
    ]
    assert items.filter(pl.col("item_id") == "f").get_column("year").to_list() == [None]
    inter = ds.interactions()
    assert inter.height == 14 and inter.schema["timestamp"] == pl.Int64
    assert ds.users().columns == ["user_idx", "user_id", "age", "gender"]
    assert ds.meta["tables"]["interactions"]["rows"] == 14
    ds.verify()


def test_reingest_identical_input_is_a_noop(tiny_config, work):
    first = ingest(tiny_config, work_dir=work)
    mtime = (first.path / "dataset.json").stat().st_mtime_ns
    second = ingest(tiny_config, work_dir=work)
    assert not second.created and second.version == first.version
    assert (first.path / "dataset.json").stat().st_mtime_ns == mtime


@pytest.mark.parametrize("fmt", ["parquet", "tsv"])
def test_same_content_in_other_formats_gives_same_version(tiny_config, work, tmp_path, fmt):
    tables = tiny_tables()
    tables["interactions"] = tables["interactions"].with_columns(pl.col("rating").cast(pl.Float32))
    paths = write_tables(tmp_path / fmt, tables, fmt)
    other = ingest(DatasetConfig(name="tiny", source="files", **paths), work_dir=work)
    assert other.version == ingest(tiny_config, work_dir=work).version


def test_exact_duplicates_are_dropped_and_counted(tmp_path, work):
    tables = tiny_tables()
    tables["interactions"] = pl.concat([tables["interactions"], tables["interactions"].head(2)])
    paths = write_tables(tmp_path / "dup", tables)
    result = ingest(DatasetConfig(name="dup", source="files", **paths), work_dir=work)
    meta = load_dataset(work, "dup", result.version).meta
    assert meta["duplicates_dropped"] == 2 and meta["tables"]["interactions"]["rows"] == 14


def test_column_mapping(tmp_path, work):
    tables = tiny_tables()
    tables["items"] = tables["items"].rename({"item_id": "sku", "title": "name"})
    paths = write_tables(tmp_path / "map", tables)
    cfg = DatasetConfig(
        name="mapped", source="files", columns={"item_id": "sku", "title": "name"}, **paths
    )
    assert ingest(cfg, work_dir=work).created


def test_iso_timestamps_are_parsed(tmp_path, work):
    tables = tiny_tables()
    tables["interactions"] = tables["interactions"].with_columns(
        pl.from_epoch("timestamp", time_unit="s")
        .dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        .alias("timestamp")
    )
    paths = write_tables(tmp_path / "iso", tables)
    result = ingest(DatasetConfig(name="iso", source="files", **paths), work_dir=work)
    stamps = load_dataset(work, "iso", result.version).interactions().get_column("timestamp")
    assert sorted(stamps.to_list())[:3] == [1, 2, 5]


def test_files_source_needs_paths():
    with pytest.raises(ValueError, match="needs both"):
        DatasetConfig(source="files")


def test_path_traversal_names_are_rejected():
    for bad in ["../x", "a/b", "/abs", "..", ""]:
        with pytest.raises(ValueError, match="invalid dataset name"):
            DatasetConfig(name=bad)


def test_missing_movielens_package_names_install_command(monkeypatch):
    import importlib.util

    from storage import sources

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install --no-deps recbole==1.2.1"):
        sources.movielens_100k_dir()


def _ingest_broken(
    tmp_path: Path,
    work: Path,
    table: str,
    frame: pl.DataFrame | None = None,
    raw: bytes | None = None,
) -> DataError:
    tables = tiny_tables()
    if frame is not None:
        tables[table] = frame
    paths = write_tables(tmp_path / "bad", tables)
    if raw is not None:
        paths[table].write_bytes(raw)
    with pytest.raises(DataError) as info:
        ingest(DatasetConfig(name="bad", source="files", **paths), work_dir=work)
    assert not (work / "data" / "bad").exists() or not any(
        p.name != "LATEST" for p in (work / "data" / "bad").iterdir()
    ), "a failed ingest must write nothing"
    return info.value


def test_missing_required_column(tmp_path, work):
    err = _ingest_broken(
        tmp_path, work, "interactions", tiny_tables()["interactions"].drop("timestamp")
    )
    assert err.column == "timestamp" and "missing required column" in str(err)
    assert "interactions.csv" in str(err) and "Columns found" in str(err)


def test_uncastable_rating(tmp_path, work):
    frame = tiny_tables()["interactions"].with_columns(pl.col("rating").cast(pl.String))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 2)
        .then(pl.lit("five"))
        .otherwise(pl.col("rating"))
        .alias("rating")
    )
    err = _ingest_broken(tmp_path, work, "interactions", frame)
    assert err.column == "rating" and err.n_rows == 2 and err.examples == ["five", "five"]


def test_null_ids(tmp_path, work):
    frame = tiny_tables()["interactions"].with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(None)
        .otherwise(pl.col("user_id"))
        .alias("user_id")
    )
    err = _ingest_broken(tmp_path, work, "interactions", frame)
    assert err.column == "user_id" and err.n_rows == 1 and "null or empty id" in str(err)


def test_unknown_item_reference(tmp_path, work):
    frame = tiny_tables()["interactions"].with_columns(
        pl.when(pl.col("item_id") == "f")
        .then(pl.lit("zz"))
        .otherwise(pl.col("item_id"))
        .alias("item_id")
    )
    err = _ingest_broken(tmp_path, work, "interactions", frame)
    assert err.column == "item_id" and err.n_rows == 1 and err.examples == ["zz"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-5", "negative"),
        ("NaN", "unparseable"),
        ("yesterday", "unparseable"),
        ("", "unparseable"),
        ("99999999999999", "after year 3000"),
    ],
)
def test_bad_timestamps(tmp_path, work, value, message):
    frame = tiny_tables()["interactions"].with_columns(pl.col("timestamp").cast(pl.String))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit(value))
        .otherwise(pl.col("timestamp"))
        .alias("timestamp")
    )
    err = _ingest_broken(tmp_path, work, "interactions", frame)
    assert err.column == "timestamp" and err.n_rows == 1 and message in str(err)


@pytest.mark.parametrize("title", ["", "   ", None])
def test_empty_titles(tmp_path, work, title):
    frame = tiny_tables()["items"].with_columns(
        pl.when(pl.col("item_id") == "c")
        .then(pl.lit(title))
        .otherwise(pl.col("title"))
        .alias("title")
    )
    err = _ingest_broken(tmp_path, work, "items", frame)
    assert err.column == "title" and err.n_rows == 1 and err.examples == ["c"]


def test_undecodable_text(tmp_path, work):
    raw = b"item_id,title\na,Alpha\nb,B\xff\xfeta\nc,Gamma\nd,D\ne,E\nf,F\n"
    err = _ingest_broken(tmp_path, work, "items", raw=raw)
    assert "not valid UTF-8" in str(err) and err.n_rows == 1 and "line 3" in err.examples[0]


def test_duplicate_item_ids(tmp_path, work):
    items = tiny_tables()["items"]
    err = _ingest_broken(tmp_path, work, "items", pl.concat([items, items.head(1)]))
    assert err.column == "item_id" and "duplicate" in str(err)
