"""Source adapters: turn raw files into raw polars tables with canonical column names.

Two sources: the embedded `movielens-100k` (from the installed recbole wheel's example data, read
without importing recbole) and bring-your-own `files` (Parquet, CSV or TSV + a column mapping).
Validation and type normalisation happen later, in `storage.datasets`.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from storage.errors import DataError

RECBOLE_INSTALL = "pip install --no-deps recbole==1.2.1"


@dataclass(frozen=True)
class RawTables:
    """Raw tables with canonical column names; `files` names where each came from (for errors)."""

    interactions: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame | None
    files: dict[str, str]


def movielens_100k_dir() -> Path:
    """MovieLens-100K folder in the installed recbole wheel (recbole is not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the embedded MovieLens-100K data set is not installed",
            hint=f"Install it with: {RECBOLE_INSTALL} (or run `make install`)",
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").exists():
        raise DataError(
            f"MovieLens-100K files are missing under {folder}",
            hint=f"Reinstall with: {RECBOLE_INSTALL} --force-reinstall",
        )
    return folder


def _read_atomic_tsv(path: Path) -> pl.DataFrame:
    """Read a RecBole atomic file: tab-separated, header 'name:type'. Everything as strings."""
    frame = read_table(path, separator="\t", quote_char=None)  # titles hold bare quotes
    return frame.rename({c: c.split(":", 1)[0] for c in frame.columns})


def load_movielens_100k() -> RawTables:
    folder = movielens_100k_dir()
    inter = _read_atomic_tsv(folder / "ml-100k.inter")
    items = _read_atomic_tsv(folder / "ml-100k.item").rename(
        {"movie_title": "title", "release_year": "year", "class": "genres"}
    )
    # genres are space-separated single tokens ("Film-Noir", "Children's"); two items have a
    # placeholder instead of a year ('unkonwn', 'V'), which the source means as "no year"
    items = items.with_columns(
        pl.col("genres").str.split(" "),
        pl.when(pl.col("year").str.contains(r"^\d{4}$")).then(pl.col("year")).alias("year"),
    )
    users = _read_atomic_tsv(folder / "ml-100k.user")
    files = {
        "interactions": str(folder / "ml-100k.inter"),
        "items": str(folder / "ml-100k.item"),
        "users": str(folder / "ml-100k.user"),
    }
    return RawTables(inter, items, users, files)


def decode_utf8(data: bytes, *, file: str) -> str:
    """Decode bytes as UTF-8, or raise a DataError naming the undecodable lines."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        bad = []
        for lineno, line in enumerate(data.split(b"\n"), start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(f"line {lineno}: {line[:60]!r}")
        raise DataError(
            "text is not valid UTF-8",
            file=file,
            n_rows=len(bad),
            examples=bad,
            hint="Re-encode the file as UTF-8",
        ) from None


def read_table(
    path: Path, *, separator: str | None = None, quote_char: str | None = '"'
) -> pl.DataFrame:
    """Read Parquet as typed; CSV/TSV as all-string columns (cast with clear errors later)."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path))
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - any reader failure is bad input here
            raise DataError(f"cannot read Parquet: {exc}", file=str(path)) from None
    if separator is None:
        if suffix in (".tsv", ".tab", ".inter", ".item", ".user"):
            separator = "\t"
        elif suffix == ".csv":
            separator = ","
        else:
            raise DataError(
                f"unknown file type '{suffix}'",
                file=str(path),
                hint="Use .parquet, .csv or .tsv",
            )
    text = decode_utf8(path.read_bytes(), file=str(path))
    if not text.strip():
        raise DataError("file is empty", file=str(path))
    try:
        return pl.read_csv(
            io.StringIO(text),
            separator=separator,
            infer_schema_length=0,
            quote_char=quote_char,
        )
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot parse as delimited text: {exc}", file=str(path)) from None


def read_items(path: Path, *, columns: dict[str, str], genres_separator: str) -> pl.DataFrame:
    """An items file with canonical column names; a string genres column split into a list."""
    frame = read_table(path)
    renames = {src: canon for canon, src in columns.items()}
    frame = frame.rename({c: renames[c] for c in frame.columns if c in renames})
    if "genres" in frame.columns and frame.schema["genres"] == pl.String:
        frame = frame.with_columns(
            pl.col("genres").str.split(genres_separator).list.eval(pl.element().str.strip_chars())
        )
    return frame


def load_files(
    *,
    interactions: Path,
    items: Path,
    users: Path | None,
    columns: dict[str, str],
    genres_separator: str,
) -> RawTables:
    """Bring-your-own files. `columns` maps canonical to source names, e.g. {"item_id": "sku"}."""
    renames = {src: canon for canon, src in columns.items()}
    files = {"interactions": str(interactions), "items": str(items)}

    def _load(path: Path) -> pl.DataFrame:
        frame = read_table(path)
        return frame.rename({c: renames[c] for c in frame.columns if c in renames})

    inter_frame = _load(interactions)
    item_frame = read_items(items, columns=columns, genres_separator=genres_separator)
    user_frame = None
    if users is not None:
        files["users"] = str(users)
        user_frame = _load(users)
    return RawTables(inter_frame, item_frame, user_frame, files)
