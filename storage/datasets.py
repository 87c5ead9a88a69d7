"""Ingest a source into an immutable, content-addressed dataset version, and load it back.

Layout: <work>/data/<name>/<version>/{interactions,items,users}.parquet + dataset.json, with
`<work>/data/<name>/LATEST` naming the newest version. The version is a hash of the normalised
content, so re-ingesting identical input is a no-op. Everything is staged in a temp folder and
renamed into place: a crash or a DataError never leaves a partial version visible.
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from storage import validate as v
from storage.atomic import (
    atomic_write_json,
    atomic_write_text,
    read_json,
    sha256_file,
    staging_dir,
    validate_name,
    write_parquet,
)
from storage.errors import DataError, IntegrityError, NotFound
from storage.faults import crash_point
from storage.paths import absolute
from storage.schema import (
    INTERACTION_REQUIRED,
    INTERACTIONS,
    ITEM_REQUIRED,
    ITEMS_BASE,
    SCHEMA_VERSION,
    USER_REQUIRED,
    USERS_BASE,
)
from storage.sources import RawTables, load_files, load_movielens_100k, read_items
from storage.workdir import WorkDir

log = logging.getLogger(__name__)


class DatasetConfig(BaseModel):
    """Where a dataset comes from. Validated on construction."""

    model_config = ConfigDict(extra="forbid")

    name: str = "movielens-100k"  # dataset name, a folder under <work>/data
    source: Literal["movielens-100k", "files"] = "movielens-100k"
    interactions: Path | None = None  # files source: interactions file (.parquet/.csv/.tsv)
    items: Path | None = None  # files source: items file
    users: Path | None = None  # files source: optional users file
    columns: dict[str, str] = {}  # canonical name -> source column name, e.g. {item_id: sku}
    genres_separator: str = "|"  # files source: separator when genres is one string

    @field_validator("name")
    @classmethod
    def _safe_name(cls, name: str) -> str:
        return validate_name(name, what="dataset name")

    @field_validator("interactions", "items", "users")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        """Relative to the current directory when the config is built (a config file's own
        relative paths are taken from its folder before: pipelines/config.py)."""
        return None if path is None else absolute(path)

    @model_validator(mode="after")
    def _files_need_paths(self) -> DatasetConfig:
        if self.source == "files" and (self.interactions is None or self.items is None):
            raise ValueError("source 'files' needs both `interactions` and `items` paths")
        return self


@dataclass(frozen=True)
class IngestResult:
    name: str
    version: str
    path: Path
    created: bool  # False when an identical version already existed (no-op)


def table_hash(table: pa.Table) -> str:
    """Content hash of an Arrow table, independent of Parquet encoding and chunking."""
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue()).hexdigest()


def _sorted_ids(ids: pl.Series) -> list[str]:
    unique = ids.unique().to_list()
    if all(s.isdigit() for s in unique):
        return sorted(unique, key=lambda s: (len(s.lstrip("0")), s.lstrip("0"), s))
    return sorted(unique)


def normalise_items(items: pl.DataFrame, *, file: str) -> pl.DataFrame:
    """Validate an items table (item_id, title required) into the canonical columns, no index."""
    v.require_columns(items, ITEM_REQUIRED, file=file, table="items")
    items = v.normalise_id(items, "item_id", file=file, table="items")
    v.check_unique(items, "item_id", file=file, table="items")
    items = v.check_text(items, "title", file=file, table="items")
    items = v.normalise_year(items, file=file)
    items = v.normalise_genres(items, file=file)
    if "description" not in items.columns:
        items = items.with_columns(pl.lit(None, dtype=pl.String).alias("description"))
    return v.extra_columns_as_strings(
        items, file=file, table="items", skip=("item_id", "year", "genres")
    )


def read_new_items(path: Path, config: DatasetConfig) -> pl.DataFrame:
    """An items file (such as the nightly inbox's), renamed and validated as ingest does."""
    frame = read_items(path, columns=config.columns, genres_separator=config.genres_separator)
    return normalise_items(frame, file=str(path))


def normalise(raw: RawTables) -> tuple[pa.Table, pa.Table, pa.Table, dict[str, int]]:
    """Validate raw tables and build indexed canonical tables. Raises DataError on bad input."""
    f_int, f_item = raw.files["interactions"], raw.files["items"]
    inter = raw.interactions
    v.require_columns(inter, INTERACTION_REQUIRED, file=f_int, table="interactions")
    inter = v.normalise_id(inter, "user_id", file=f_int, table="interactions")
    inter = v.normalise_id(inter, "item_id", file=f_int, table="interactions")
    inter = v.normalise_timestamp(inter, file=f_int)
    inter = v.cast_float(inter, "rating", file=f_int, table="interactions")
    inter = v.cast_float(inter, "weight", file=f_int, table="interactions")
    inter = inter.select("user_id", "item_id", "timestamp", "rating", "weight")
    n_before = inter.height
    inter = inter.unique(maintain_order=True)
    stats = {"duplicates_dropped": n_before - inter.height}
    if stats["duplicates_dropped"]:
        log.warning(
            "dropped %d exact duplicate interaction rows from %s",
            stats["duplicates_dropped"],
            f_int,
        )

    items = normalise_items(raw.items, file=f_item)

    unknown = ~inter.get_column("item_id").is_in(items.get_column("item_id").implode())
    if unknown.any():
        raise DataError(
            "interactions refer to items that are not in the items table",
            file=f_int,
            column="item_id",
            n_rows=int(unknown.sum()),
            examples=inter.filter(unknown).get_column("item_id").unique().head(5).to_list(),
        )

    user_ids = _sorted_ids(inter.get_column("user_id"))
    item_ids = _sorted_ids(items.get_column("item_id"))
    user_map = pl.DataFrame(
        {"user_id": user_ids, "user_idx": pl.arange(0, len(user_ids), eager=True, dtype=pl.Int32)}
    )
    item_map = pl.DataFrame(
        {"item_id": item_ids, "item_idx": pl.arange(0, len(item_ids), eager=True, dtype=pl.Int32)}
    )

    users = user_map
    if raw.users is not None:
        f_user = raw.files["users"]
        attrs = raw.users
        v.require_columns(attrs, USER_REQUIRED, file=f_user, table="users")
        attrs = v.normalise_id(attrs, "user_id", file=f_user, table="users")
        v.check_unique(attrs, "user_id", file=f_user, table="users")
        attrs = v.extra_columns_as_strings(attrs, file=f_user, table="users", skip=("user_id",))
        missing = ~user_map.get_column("user_id").is_in(attrs.get_column("user_id").implode())
        if missing.any():
            raise DataError(
                "interactions refer to users that are not in the users table",
                file=f_int,
                column="user_id",
                n_rows=int(missing.sum()),
                examples=user_map.filter(missing).get_column("user_id").head(5).to_list(),
            )
        stats["users_without_interactions"] = attrs.height - user_map.height
        users = user_map.join(attrs, on="user_id", how="left")

    inter = (
        inter.join(user_map, on="user_id")
        .join(item_map, on="item_id")
        .sort("user_idx", "timestamp", "item_idx")
    )
    items = item_map.join(items, on="item_id").sort("item_idx")
    users = users.sort("user_idx")
    return (
        _to_arrow(inter, INTERACTIONS, extra=False),
        _to_arrow(items, ITEMS_BASE, extra=True),
        _to_arrow(users, USERS_BASE, extra=True),
        stats,
    )


def _to_arrow(frame: pl.DataFrame, base: pa.Schema, *, extra: bool) -> pa.Table:
    """Order columns as the canonical schema (extra string columns after it, sorted)."""
    extras = sorted(c for c in frame.columns if c not in base.names) if extra else []
    table = frame.select([*base.names, *extras]).to_arrow()
    schema = pa.schema(list(base) + [pa.field(c, pa.string()) for c in extras])
    return table.cast(schema)


def read_source(config: DatasetConfig) -> RawTables:
    if config.source == "movielens-100k":
        return load_movielens_100k()
    assert config.interactions is not None and config.items is not None
    return load_files(
        interactions=config.interactions,
        items=config.items,
        users=config.users,
        columns=config.columns,
        genres_separator=config.genres_separator,
    )


def ingest(config: DatasetConfig, *, work_dir: Path) -> IngestResult:
    """Validate, normalise and write a dataset version. Identical content is a no-op."""
    raw = read_source(config)
    return write_version(
        raw, name=config.name, work_dir=work_dir, source=config.model_dump(mode="json")
    )


def write_version(raw: RawTables, *, name: str, work_dir: Path, source: dict) -> IngestResult:
    interactions, items, users, stats = normalise(raw)
    tables = {"interactions": interactions, "items": items, "users": users}
    hashes = {key: table_hash(t) for key, t in tables.items()}
    version = hashlib.sha256(
        f"{SCHEMA_VERSION}:{hashes['interactions']}:{hashes['items']}:{hashes['users']}".encode()
    ).hexdigest()[:12]
    root = WorkDir(work_dir).data / validate_name(name, what="dataset name")
    final = root / version
    created = not (final / "dataset.json").exists()
    if created:
        with staging_dir(final) as tmp:
            meta_tables = {}
            for key, table in tables.items():
                write_parquet(tmp / f"{key}.parquet", table)
                meta_tables[key] = {
                    "rows": table.num_rows,
                    "content_sha256": hashes[key],
                    "file_sha256": sha256_file(tmp / f"{key}.parquet"),
                }
            atomic_write_json(
                tmp / "dataset.json",
                {
                    "name": name,
                    "version": version,
                    "schema_version": SCHEMA_VERSION,
                    "source": source,
                    "source_files": raw.files,
                    "created_at": datetime.now(UTC).isoformat(),
                    "tables": meta_tables,
                    "n_users": users.num_rows,
                    "n_items": items.num_rows,
                    **stats,
                },
            )
            crash_point("ingest.before_commit")
    atomic_write_text(root / "LATEST", version + "\n")
    return IngestResult(name=name, version=version, path=final, created=created)


@dataclass(frozen=True)
class Dataset:
    """A committed dataset version on disk (`path` made absolute when the object is built)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", absolute(self.path))

    @cached_property
    def meta(self) -> dict:
        return read_json(self.path / "dataset.json")

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def version(self) -> str:
        return self.meta["version"]

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def n_users(self) -> int:
        return int(self.meta["n_users"])

    @property
    def n_items(self) -> int:
        return int(self.meta["n_items"])

    def interactions(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / "interactions.parquet")

    def items(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / "items.parquet")

    def sequences(self) -> list[np.ndarray]:
        """Per user, every item index in chronological order (the whole known history)."""
        return user_sequences(self.interactions(), self.n_users)

    def users(self) -> pl.DataFrame:
        return pl.read_parquet(self.path / "users.parquet")

    def verify(self) -> None:
        """Check every table file against the hash recorded at ingest."""
        for key, info in self.meta["tables"].items():
            path = self.path / f"{key}.parquet"
            if not path.exists() or sha256_file(path) != info["file_sha256"]:
                raise IntegrityError(
                    f"dataset file {path} is missing or altered "
                    "(hash differs from dataset.json); re-run ingest"
                )


def user_sequences(rows: pl.DataFrame, n_users: int) -> list[np.ndarray]:
    """Per user index 0..n_users-1, the item indices of its `rows`, oldest first (ties of a
    timestamp by item index)."""
    rows = rows.sort("user_idx", "timestamp", "item_idx")
    users = rows.get_column("user_idx").to_numpy()
    items = rows.get_column("item_idx").to_numpy().astype(np.int64)
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(n_users)]


def resolve_version(work_dir: Path, name: str, version: str = "latest") -> str:
    root = WorkDir(work_dir).data / validate_name(name, what="dataset name")
    if version == "latest":
        latest = root / "LATEST"
        if not latest.exists():
            raise NotFound(
                f"no dataset '{name}' under {root.parent}; run `kdrec data ingest` first"
            )
        version = latest.read_text().strip()
    return validate_name(version, what="dataset version")


def load_dataset(work_dir: Path, name: str, version: str = "latest") -> Dataset:
    version = resolve_version(work_dir, name, version)
    path = WorkDir(work_dir).data / name / version
    if not (path / "dataset.json").exists():
        raise NotFound(f"dataset version {name}@{version} not found at {path}")
    return Dataset(path)
