"""The nightly inbox: new interaction/item files dropped in a folder become a new dataset version.

<work>/inbox/<dataset>/interactions*.{csv,tsv,parquet}  new interactions (same columns as ingest);
                                                       a user seen for the first time is added
                                                       (with no attributes yet)
<work>/inbox/<dataset>/items*.{csv,tsv,parquet}         new or updated items (a newer row wins)
Processed files move to <work>/inbox/<dataset>/processed/ only after the run that used them ends
well; a failed run leaves them in place for the next one.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl

from storage.datasets import Dataset, DatasetConfig, IngestResult, write_version
from storage.sources import RawTables, read_table
from storage.workdir import WorkDir

SUFFIXES = (".csv", ".tsv", ".parquet")


def inbox_dir(work_dir: Path, dataset: str) -> Path:
    return WorkDir(work_dir).inbox(dataset)


def pending_files(folder: Path) -> dict[str, list[Path]]:
    """Inbox files by kind ("interactions", "items"), oldest name first."""
    found: dict[str, list[Path]] = {"interactions": [], "items": []}
    if not folder.exists():
        return found
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in SUFFIXES:
            for kind in found:
                if path.name.startswith(kind):
                    found[kind].append(path)
    return found


def _canonical(frame: pl.DataFrame, drop: tuple[str, ...]) -> pl.DataFrame:
    return frame.drop([c for c in drop if c in frame.columns])


def _renamed(path: Path, columns: dict[str, str]) -> pl.DataFrame:
    frame = read_table(path)
    renames = {src: canon for canon, src in columns.items() if src in frame.columns}
    return frame.rename(renames)


def merge_inbox(current: Dataset, files: dict[str, list[Path]], config: DatasetConfig) -> RawTables:
    """The current version's tables plus every inbox file (validated again on write)."""
    inter = _canonical(current.interactions(), ("user_idx", "item_idx"))
    items = _canonical(current.items(), ("item_idx",))
    users = _canonical(current.users(), ("user_idx",))
    as_text: list[str] = [c for c in ("user_id", "item_id") if c in inter.columns]
    as_text += ["timestamp", "rating", "weight"]
    new_inter = [_renamed(p, config.columns) for p in files["interactions"]]
    new_items = [_renamed(p, config.columns) for p in files["items"]]
    new_items = [
        f.with_columns(pl.col("genres").str.split(config.genres_separator).list.join("|"))
        if f.schema.get("genres") == pl.String
        else f
        for f in new_items
    ]
    if new_inter:
        parts = [inter.cast(dict.fromkeys(as_text, pl.String))]
        parts += [f.cast(dict.fromkeys(f.columns, pl.String)) for f in new_inter]
        inter = pl.concat(parts, how="diagonal_relaxed")
    if new_items:
        base = items.with_columns(pl.col("genres").list.join("|"), pl.col("year").cast(pl.String))
        parts = [base.cast(dict.fromkeys(base.columns, pl.String))]
        parts += [f.cast(dict.fromkeys(f.columns, pl.String)) for f in new_items]
        items = pl.concat(parts, how="diagonal_relaxed").unique(
            "item_id", keep="last", maintain_order=True
        )
    known = set(users.get_column("user_id").to_list())
    arriving = sorted(set(inter.get_column("user_id").cast(pl.String).to_list()) - known)
    if arriving:  # a user's first interactions arrive with the night: no attributes yet
        users = pl.concat([users, pl.DataFrame({"user_id": arriving})], how="diagonal_relaxed")
    origin = ", ".join(str(p) for kind in files.values() for p in kind)
    names = {
        "interactions": f"{current.path / 'interactions.parquet'} + inbox ({origin})",
        "items": f"{current.path / 'items.parquet'} + inbox",
        "users": str(current.path),
    }
    return RawTables(inter, items, users, names)


def ingest_inbox(
    work_dir: Path,
    current: Dataset,
    config: DatasetConfig,
) -> tuple[IngestResult | None, dict[str, list[Path]]]:
    """A new dataset version from the inbox, or (None, files) when the inbox is empty."""
    files = pending_files(inbox_dir(work_dir, current.name))
    if not any(files.values()):
        return None, files
    raw = merge_inbox(current, files, config)
    result = write_version(
        raw,
        name=current.name,
        work_dir=work_dir,
        source={"base": current.ref, "inbox": [str(p) for v in files.values() for p in v]},
    )
    return result, files


def mark_processed(files: dict[str, list[Path]]) -> list[Path]:
    """Move used inbox files to processed/ (atomic renames on one filesystem)."""
    moved = []
    for path in (p for kind in files.values() for p in kind):
        target = path.parent / "processed" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        moved.append(target)
    return moved
