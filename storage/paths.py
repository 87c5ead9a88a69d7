"""The one rule for paths a user writes: made absolute once, where they enter.

Imports nothing heavy: the CLI calls it before Prefect and torch load.
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | Path, *, anchor: str | Path | None = None) -> Path:
    """`path` as an absolute, normalised path (`~` expanded, `..` folded, symlinks kept): a
    relative one is taken from `anchor`, else from the current directory."""
    path = Path(path).expanduser()
    if not path.is_absolute():
        path = Path(anchor if anchor is not None else Path.cwd()) / path
    return Path(os.path.normpath(path))
