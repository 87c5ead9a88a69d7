"""Crash-safe file primitives: write to a temp path, fsync, rename. Content hashes. Safe names."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.errors import ConfigError
from storage.faults import crash_point

log = logging.getLogger(__name__)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
TMP_PREFIX = ".tmp-"


def validate_name(name: str, *, what: str = "name") -> str:
    """Reject names that could escape a folder when used as a path component."""
    if not isinstance(name, str) or not _SAFE_NAME.match(name) or ".." in name:
        raise ConfigError(
            f"invalid {what} {name!r}: use letters, digits, '.', '_', '-', '@' "
            "(no path separators, no '..', at most 128 characters)"
        )
    return name


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _tmp_sibling(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{path.name}.{uuid.uuid4().hex[:8]}")


def _atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Run `write(tmp)`, fsync tmp, rename it onto `path`: readers see the old or the new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        crash_point(f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see either the old file or the whole new one."""
    _atomic(path, lambda tmp: tmp.write_bytes(data))


def dumps_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, dumps_json(obj).encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_parquet(path: Path, table: pa.Table, *, compression: str = "zstd", **layout: Any) -> None:
    """Atomically write a Parquet file (temp, fsync, rename). Deterministic for equal tables.
    `layout`: more `pyarrow.parquet.write_table` options (`storage.embeddings.vector_layout`)."""
    _atomic(
        path,
        lambda tmp: pq.write_table(
            table, tmp, compression=compression, write_statistics=True, **layout
        ),
    )


def parquet_bytes(table: pa.Table, *, compression: str = "zstd", **layout: Any) -> bytes:
    """A Parquet file in memory (for bundles, whose files the registry writes atomically)."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression=compression, **layout)
    return buf.getvalue()


@contextlib.contextmanager
def staging_dir(final: Path) -> Iterator[Path]:
    """Yield a temp folder next to `final`; on success rename it to `final`, on error delete it.

    If `final` already exists the staged copy is discarded (first writer wins): callers write
    content-addressed folders, so an existing one already holds the same content.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}.", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)  # fails if a concurrent writer got there first
        except OSError:
            if not final.exists():
                raise
            shutil.rmtree(tmp)  # same content already in place
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json(path: Path) -> Any:
    with open(path) as f:
        return json.load(f)


@contextlib.contextmanager
def exclusive(path: Path, *, what: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) across processes; when another
    process holds it, say so in the log and wait. Released when the block ends or the process
    dies (a crashed holder never leaves a stale lock)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process using %s (%s)", what, path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
