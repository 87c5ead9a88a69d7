"""Error types raised by the storage layer. Each names what is wrong and where."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class KdrecError(Exception):
    """Something the user can fix (input, config, stored state, environment). The CLI prints the
    message and exits 2; any other exception is a bug and shows its traceback (exit 1)."""


class ConfigError(KdrecError, ValueError):
    """A config file or option that cannot be used; names the file and the key."""


class NotFound(KdrecError, FileNotFoundError):
    """A dataset, model, config file or cache the command needs does not exist yet."""


class DataError(KdrecError, ValueError):
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


class IntegrityError(KdrecError, RuntimeError):
    """Stored data that does not match its manifest (missing, truncated or altered file)."""
