"""Error types raised by the storage layer. Each names what is wrong and where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class DataError(ValueError):
    """Input that cannot be ingested: names the file, column, affected row count and examples."""

    def __init__(
        self,
        problem: str,
        *,
        file: str | None = None,
        column: str | None = None,
        n_rows: int | None = None,
        examples: Sequence[Any] = (),
        hint: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = file
        self.column = column
        self.n_rows = n_rows
        self.examples = list(examples)[:5]
        parts = [problem]
        where = []
        if file:
            where.append(f"file {file}")
        if column:
            where.append(f"column '{column}'")
        if where:
            parts.append("in " + ", ".join(where))
        if n_rows is not None:
            parts.append(f"({n_rows} row{'s' if n_rows != 1 else ''})")
        msg = " ".join(parts)
        if self.examples:
            msg += "; examples: " + ", ".join(repr(e) for e in self.examples)
        if hint:
            msg += f". {hint}"
        super().__init__(msg)


class IntegrityError(RuntimeError):
    """Stored data that does not match its manifest (missing, truncated or altered file)."""
