"""The `kdrec` command line: `entry` composes the commands of `data`, `teacher`, `models`, `runs`
and `serving` (each thin: it parses options, calls storage/ and distill/ and prints tables)."""

import os

# torch's OpenMP threads spin-wait for each other; on a busy machine that makes training 20-30x
# slower. Passive waiting must be set before torch loads (every command imports it lazily).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pipelines.cli.entry import app, main, own_settings  # noqa: E402

__all__ = ["app", "main", "own_settings"]
