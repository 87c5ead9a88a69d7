"""Named crash points for the fault-injection tests.

`KDREC_CRASH_AT=<name>[,<name>…]` makes the process group SIGKILL itself on reaching that point
(like a power cut: no cleanup, no exception handlers, and the pipeline's worker processes die with
the process that spawned them, wherever the point fires). Run the pipeline in its own session
(`start_new_session=True`) so the group is the pipeline's alone. Unset, each point is one
environment lookup.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    target = os.environ.get("KDREC_CRASH_AT")
    if target and name in target.split(","):
        os.killpg(os.getpgid(0), signal.SIGKILL)
