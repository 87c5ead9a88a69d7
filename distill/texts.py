"""Item and user texts from configurable templates, each with a content hash.

Templates are `str.format` strings with optional sections in square brackets: a section is dropped
when any placeholder inside it is empty, e.g. "{title}[ ({year})][. Genres: {genres}]". Item
placeholders are item columns; user placeholders are user attribute columns plus `{history}`, the
titles of the user's most recent *train* interactions, newest first (never validation or test
items).
History is cut, oldest titles first, until the text fits `max_tokens`.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

_SECTION = re.compile(r"\[([^\[\]]*)\]")
TokenCounter = Callable[[str], int]


class TextConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_template: str = "{title}[ ({year})][. Genres: {genres}][. {description}]"
    user_template: str = (
        "[Age {age}. ][Gender {gender}. ][Occupation {occupation}. ]Recently watched: {history}"
    )
    history_len: int = Field(20, ge=0)  # most recent train items named in the user text
    history_separator: str = "; "
    max_tokens: int = Field(256, ge=16)  # budget for a user text; oldest history is cut first

    @field_validator("item_template", "user_template")
    @classmethod
    def _parses(cls, template: str) -> str:
        try:
            list(string.Formatter().parse(_SECTION.sub(r"\1", template)))
        except ValueError as exc:
            raise ValueError(f"bad text template {template!r}: {exc}") from None
        return template


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _placeholders(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill a template; drop [sections] whose placeholders are empty; squeeze whitespace."""

    def _value(name: str) -> str:
        value = values.get(name)
        if value is None:
            return ""
        if isinstance(value, list | tuple):
            return ", ".join(str(v) for v in value)
        return str(value).strip()

    def _section(match: re.Match) -> str:
        body = match.group(1)
        names = _placeholders(body)
        if any(_value(n) == "" for n in names):
            return ""
        return body.format_map({n: _value(n) for n in names})

    outer = _SECTION.sub(_section, template)
    text = outer.format_map({n: _value(n) for n in _placeholders(outer)})
    return re.sub(r"\s+", " ", text).strip()


def item_texts(items: pl.DataFrame, config: TextConfig) -> pl.DataFrame:
    """(item_idx, text, text_hash), one row per item."""
    texts = [render(config.item_template, row) for row in items.iter_rows(named=True)]
    return pl.DataFrame(
        {
            "item_idx": items.get_column("item_idx").cast(pl.Int32),
            "text": texts,
            "text_hash": [text_hash(t) for t in texts],
        }
    )


def word_count(text: str) -> int:
    return len(text.split())


def user_texts(
    users: pl.DataFrame,
    train_sequences: Sequence[np.ndarray],
    titles: Sequence[str],
    config: TextConfig,
    *,
    count_tokens: TokenCounter = word_count,
) -> pl.DataFrame:
    """(user_idx, text, text_hash, n_history). `train_sequences[u]` is oldest-first train items."""
    rows = users.sort("user_idx").iter_rows(named=True)
    out_text, out_n = [], []
    for row in rows:
        seq = train_sequences[row["user_idx"]]
        recent = [titles[i] for i in seq[::-1][: config.history_len]]  # newest first
        while True:
            text = render(
                config.user_template, {**row, "history": config.history_separator.join(recent)}
            )
            if not recent or count_tokens(text) <= config.max_tokens:
                break
            recent = recent[:-1]  # drop the oldest title still named
        out_text.append(text)
        out_n.append(len(recent))
    return pl.DataFrame(
        {
            "user_idx": users.sort("user_idx").get_column("user_idx").cast(pl.Int32),
            "text": out_text,
            "text_hash": [text_hash(t) for t in out_text],
            "n_history": pl.Series(out_n, dtype=pl.Int32),
        }
    )
