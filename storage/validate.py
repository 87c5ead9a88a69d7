"""Validate raw tables and normalise them to the canonical schema, or raise a specific DataError.

Every check names the file, the column, how many rows are affected and up to five examples.
"""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from storage.errors import DataError


def _examples(frame: pl.DataFrame, mask: pl.Series, column: str) -> list:
    return frame.filter(mask).get_column(column).head(5).to_list()


def require_columns(frame: pl.DataFrame, required: dict, *, file: str, table: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(
            f"{table}: missing required column '{missing[0]}'",
            file=file,
            column=missing[0],
            n_rows=frame.height,
            hint=f"Columns found: {frame.columns}. Map source names with `columns:` in the config",
        )
    if frame.height == 0:
        raise DataError(f"{table}: table has no rows", file=file)


def normalise_id(frame: pl.DataFrame, column: str, *, file: str, table: str) -> pl.DataFrame:
    """Cast an id column to stripped strings; nulls and empty ids are errors."""
    values = frame.get_column(column)
    if values.dtype == pl.Float64 or values.dtype == pl.Float32:
        frac = values.is_not_null() & (values != values.floor())
        if frac.any():
            raise DataError(
                f"{table}: ids must be integers or strings",
                file=file,
                column=column,
                n_rows=int(frac.sum()),
                examples=_examples(frame, frac, column),
            )
        values = values.cast(pl.Int64)
    ids = values.cast(pl.String).str.strip_chars()
    bad = ids.is_null() | (ids == "")
    if bad.any():
        raise DataError(
            f"{table}: null or empty id",
            file=file,
            column=column,
            n_rows=int(bad.sum()),
            examples=[f"row {i}" for i in bad.arg_true().head(5).to_list()],
        )
    return frame.with_columns(ids.alias(column))


def _parse_time_string(value: str) -> float | None:
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:  # naive times are taken as UTC, so results do not depend on the host
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def normalise_timestamp(frame: pl.DataFrame, *, file: str) -> pl.DataFrame:
    """Epoch seconds (numbers or numeric strings) or ISO-8601 strings -> int64 epoch seconds."""
    col = frame.get_column("timestamp")
    if col.dtype.is_temporal():
        secs = col.cast(pl.Datetime("us")).dt.epoch("s").cast(pl.Float64)
    elif col.dtype.is_numeric():
        secs = col.cast(pl.Float64)
    else:
        secs = col.cast(pl.String).map_elements(_parse_time_string, return_dtype=pl.Float64)
    unparseable = secs.is_null() | secs.is_nan()
    if unparseable.any():
        raise DataError(
            "interactions: unparseable or missing timestamp",
            file=file,
            column="timestamp",
            n_rows=int(unparseable.sum()),
            examples=_examples(frame, unparseable, "timestamp"),
            hint="Use epoch seconds or ISO-8601 (e.g. 2024-05-01T12:00:00Z)",
        )
    bad = secs.is_infinite() | (secs < 0) | (secs > 32503680000)  # year 3000
    if bad.any():
        raise DataError(
            "interactions: timestamp negative, infinite or after year 3000",
            file=file,
            column="timestamp",
            n_rows=int(bad.sum()),
            examples=_examples(frame, bad, "timestamp"),
        )
    return frame.with_columns(secs.floor().cast(pl.Int64).alias("timestamp"))


def cast_float(frame: pl.DataFrame, column: str, *, file: str, table: str) -> pl.DataFrame:
    if column not in frame.columns:
        return frame.with_columns(pl.lit(None, dtype=pl.Float32).alias(column))
    col = frame.get_column(column)
    src = col.cast(pl.String).str.strip_chars() if col.dtype == pl.String else col
    if col.dtype == pl.String:
        src = src.replace("", None)
    cast = src.cast(pl.Float32, strict=False)
    bad = (cast.is_null() & src.is_not_null()) | cast.is_nan() | cast.is_infinite()
    if bad.any():
        raise DataError(
            f"{table}: value is not a finite number",
            file=file,
            column=column,
            n_rows=int(bad.sum()),
            examples=_examples(frame, bad, column),
        )
    return frame.with_columns(cast.alias(column))


def check_text(frame: pl.DataFrame, column: str, *, file: str, table: str) -> pl.DataFrame:
    """Text columns: strings; a required one (title) may not be null, empty or whitespace."""
    text = frame.get_column(column).cast(pl.String)
    bad = text.is_null() | (text.str.strip_chars() == "")
    if bad.any():
        raise DataError(
            f"{table}: empty or all-whitespace {column}",
            file=file,
            column=column,
            n_rows=int(bad.sum()),
            examples=_examples(frame.with_columns(text), bad, "item_id"),
        )
    return frame.with_columns(text.str.strip_chars().alias(column))


def check_unique(frame: pl.DataFrame, column: str, *, file: str, table: str) -> None:
    dup = frame.get_column(column).is_duplicated()
    if dup.any():
        raise DataError(
            f"{table}: duplicate {column}",
            file=file,
            column=column,
            n_rows=int(dup.sum()),
            examples=_examples(frame, dup, column)[:5],
        )


def normalise_year(frame: pl.DataFrame, *, file: str) -> pl.DataFrame:
    if "year" not in frame.columns:
        return frame.with_columns(pl.lit(None, dtype=pl.Int32).alias("year"))
    col = frame.get_column("year")
    src = col.cast(pl.String).str.strip_chars().replace("", None)
    year = src.cast(pl.Float64, strict=False)
    whole = year.is_not_null() & year.is_finite() & (year == year.floor())
    in_range = (year >= -9999) & (year <= 9999)
    bad = src.is_not_null() & ~(whole & in_range).fill_null(False)
    if bad.any():
        raise DataError(
            "items: year is not an integer between -9999 and 9999",
            file=file,
            column="year",
            n_rows=int(bad.sum()),
            examples=_examples(frame, bad, "year"),
        )
    return frame.with_columns(year.cast(pl.Int32).alias("year"))


def normalise_genres(frame: pl.DataFrame, *, file: str) -> pl.DataFrame:
    if "genres" not in frame.columns:
        return frame.with_columns(pl.lit(None, dtype=pl.List(pl.String)).alias("genres"))
    col = frame.get_column("genres")
    if col.dtype == pl.String:
        col = col.str.split("|")
    if not isinstance(col.dtype, pl.List):
        raise DataError(
            "items: genres must be a list of strings or a separated string",
            file=file,
            column="genres",
            n_rows=frame.height,
        )
    col = col.cast(pl.List(pl.String)).list.eval(
        pl.element().filter(pl.element().str.len_chars() > 0)
    )
    return frame.with_columns(col.alias("genres"))


def extra_columns_as_strings(
    frame: pl.DataFrame, *, file: str, table: str, skip: tuple[str, ...]
) -> pl.DataFrame:
    """Extra columns become strings (usable by text templates); nested values are rejected."""
    out = []
    for name, dtype in frame.schema.items():
        if name in skip:
            continue
        if isinstance(dtype, pl.List | pl.Struct | pl.Array):
            raise DataError(
                f"{table}: extra column must be scalar", file=file, column=name, n_rows=frame.height
            )
        out.append(pl.col(name).cast(pl.String))
    return frame.with_columns(out) if out else frame
