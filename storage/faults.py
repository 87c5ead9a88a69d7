"""Named crash points for the fault-injection tests.

`KDREC_CRASH_AT=<name>[,<name>…]` makes the process SIGKILL itself on reaching that point (like a
power cut: no cleanup, no exception handlers). Unset, each point is one environment lookup.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    target = os.environ.get("KDREC_CRASH_AT")
    if target and name in target.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
