"""Atomic Parquet shard store with a manifest written last.

A store is a folder. Each shard is written atomically (temp, fsync, rename) as
`shard-<key>-<sha8>.parquet`: the content hash in the name means a new shard never overwrites a
file that a committed manifest points to. `commit()` writes `manifest.json` (every shard, its row
count and sha256) atomically, last; readers trust only the manifest, so a crash between shard
writes and the commit leaves readers on the previous state. Shards written but not yet committed
are found again by `pending()`, which lets an interrupted run resume where it stopped.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from storage.atomic import TMP_PREFIX, atomic_write_json, read_json, sha256_file
from storage.errors import IntegrityError, NotFound
from storage.faults import crash_point

MANIFEST = "manifest.json"
_SHARD_RE = re.compile(r"^shard-(?P<key>[A-Za-z0-9_]+)-(?P<sha>[0-9a-f]{8})\.parquet$")


@dataclass(frozen=True)
class ShardInfo:
    key: str
    file: str
    rows: int
    sha256: str


class ShardStore:
    """Parquet shards in one folder, committed by a manifest."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- writing -----------------------------------------------------------------------------
    def write_shard(self, key: str, table: pa.Table) -> ShardInfo:
        """Write one shard atomically; returns its info. Does not touch the manifest."""
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise ValueError(f"invalid shard key {key!r}")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{TMP_PREFIX}shard-{key}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            pq.write_table(table, staging, compression="zstd", write_statistics=True)
            with open(staging, "rb+") as f:
                os.fsync(f.fileno())
            digest = sha256_file(staging)
            crash_point(f"shard.write:{key}")
            final = self.root / f"shard-{key}-{digest[:8]}.parquet"
            os.replace(staging, final)  # concurrent writers of one key write identical bytes
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        return ShardInfo(key=key, file=final.name, rows=table.num_rows, sha256=digest)

    def pending(self, key: str | None = None) -> dict[str, ShardInfo]:
        """Shards on disk whose content matches the hash in their name, by key (newest wins);
        only `key`'s files when given (so a task checks its own shard, not every shard)."""
        found: dict[str, ShardInfo] = {}
        pattern = "shard-*.parquet" if key is None else f"shard-{key}-*.parquet"
        for path in sorted(self.root.glob(pattern), key=lambda p: p.stat().st_mtime):
            m = _SHARD_RE.match(path.name)
            if not m:
                continue
            digest = sha256_file(path)
            if not digest.startswith(m["sha"]):
                continue  # damaged: will be recomputed
            rows = pq.ParquetFile(path).metadata.num_rows
            found[m["key"]] = ShardInfo(m["key"], path.name, rows, digest)
        return found

    def commit(
        self, shards: Sequence[ShardInfo], *, meta: dict[str, Any] | None = None, prune: bool = True
    ) -> dict:
        """Write the manifest (atomically, last). With `prune`, delete unreferenced shard files."""
        keys = [s.key for s in shards]
        if len(set(keys)) != len(keys):
            raise ValueError("duplicate shard keys in commit")
        for s in shards:
            if not (self.root / s.file).exists():
                raise IntegrityError(f"cannot commit: shard {self.root / s.file} does not exist")
        manifest = {
            "created_at": datetime.now(UTC).isoformat(),
            "total_rows": sum(s.rows for s in shards),
            "shards": [s.__dict__ for s in sorted(shards, key=lambda s: s.key)],
            "meta": meta or {},
        }
        atomic_write_json(self.root / MANIFEST, manifest)
        if prune:
            self.prune()
        return manifest

    def prune(self) -> int:
        """Delete shard files the committed manifest does not reference (and stale temp files)."""
        keep = {s["file"] for s in self.manifest()["shards"]}
        removed = 0
        for path in self.root.glob("*shard-*.parquet*"):
            in_flight = (
                path.name.startswith(TMP_PREFIX) and time.time() - path.stat().st_mtime < 3600
            )
            if path.name not in keep and not in_flight:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    # -- reading -----------------------------------------------------------------------------
    def exists(self) -> bool:
        return (self.root / MANIFEST).exists()

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.exists():
            raise NotFound(f"no committed shards at {self.root} (manifest.json missing)")
        return read_json(path)

    def shards(self) -> list[ShardInfo]:
        return [ShardInfo(**s) for s in self.manifest()["shards"]]

    def verify(self, keys: Iterable[str] | None = None) -> list[ShardInfo]:
        """Check committed shards against the manifest; IntegrityError names the first bad."""
        wanted = set(keys) if keys is not None else None
        checked = []
        for s in self.shards():
            if wanted is not None and s.key not in wanted:
                continue
            problem = self.problem(s)
            if problem:
                raise IntegrityError(
                    f"shard {self.root / s.file}: {problem}; "
                    "re-run the stage (or `kdrec teacher repair`) to recompute it"
                )
            checked.append(s)
        return checked

    def problem(self, shard: ShardInfo) -> str | None:
        """Why a committed shard is unusable, or None if it is intact."""
        path = self.root / shard.file
        if not path.exists():
            return "missing"
        if sha256_file(path) != shard.sha256:
            return "content hash mismatch (truncated or altered)"
        return None

    def paths(self, *, verify: bool = True) -> list[Path]:
        shards = self.verify() if verify else self.shards()
        return [self.root / s.file for s in shards]

    def scan(self, *, verify: bool = True) -> pl.LazyFrame:
        """Lazy polars scan across all committed shards."""
        paths = self.paths(verify=verify)
        if not paths:
            raise NotFound(f"shard store {self.root} has no shards")
        return pl.scan_parquet(paths)

    def read_shard(self, key: str, *, verify: bool = True) -> pl.DataFrame:
        info = {s.key: s for s in self.shards()}.get(key)
        if info is None:
            raise KeyError(f"no shard {key!r} in {self.root}")
        if verify:
            self.verify([key])
        return pl.read_parquet(self.root / info.file)
