"""Training progress in the Prefect UI: a progress artifact fed by the trainings' progress files.

`distill.training.loop.fit` writes `progress.json` beside each checkpoint after every epoch (also in
worker processes, where no Prefect context exists). A task that trains wraps its work in
`TrainingProgress(root, key)`: a thread reads the progress files under `root` written since the
task started and updates one progress artifact, with the epochs of each training in its
description.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast
from uuid import UUID

from distill.training.loop import PROGRESS

POLL_S = 5.0


def fraction(progress: dict) -> float:
    """How far one training is: epochs done over the epoch it will stop at by now (the patience
    window after its best epoch, or max_epochs); 1 when it has finished."""
    if progress.get("done"):
        return 1.0
    stop = min(progress["max_epochs"], progress["best_epoch"] + progress["patience"] + 1)
    return min(1.0, (progress["epoch"] + 1) / max(stop, 1))


def read_progress(root: Path, since: float) -> dict[str, dict]:
    """{training name: its progress} for progress files under `root` written since `since`."""
    found: dict[str, dict] = {}
    for path in sorted(root.rglob(PROGRESS)) if root.exists() else []:
        try:
            if path.stat().st_mtime < since:
                continue
            found[str(path.parent.relative_to(root))] = json.loads(path.read_text())
        except (OSError, ValueError):  # replaced or removed while being read: next poll
            continue
    return found


def summary(found: dict[str, dict]) -> tuple[float, str]:
    """(percent, one line per training) over the trainings found so far."""
    if not found:
        return 0.0, "no training has finished an epoch yet"
    lines = [
        f"{p.get('desc', name)}: epoch {p['epoch'] + 1}/{p['max_epochs']}, validation "
        f"{p['val']:.4f} (best {p['best']:.4f} at epoch {p['best_epoch'] + 1})"
        + (", done" if p.get("done") else "")
        for name, p in found.items()
    ]
    return 100.0 * sum(map(fraction, found.values())) / len(found), "; ".join(lines)


class TrainingProgress:
    """Context manager: one progress artifact `key` for the trainings under `root`.

    The percentage never goes back: when a new training starts the total grows, and the bar
    waits for it instead of dropping."""

    def __init__(self, root: Path, key: str, what: str, every_s: float = POLL_S) -> None:
        self.root, self.key, self.what, self.every_s = Path(root), key, what, every_s
        self.shown = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._update: Callable[[float, str], None] | None = None

    def __enter__(self) -> TrainingProgress:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        self.since = time.time() - 1.0  # file times have coarse resolution on some filesystems
        # called in a flow, Prefect's sync/async helper returns the id
        artifact = cast(UUID, create_progress_artifact(0.0, key=self.key, description=self.what))

        def update(percent: float, text: str) -> None:
            update_progress_artifact(artifact, percent, description=f"{self.what}: {text}")

        self._update = update
        self._thread = threading.Thread(target=self._run, name=f"{self.key}-poll", daemon=True)
        self._thread.start()
        return self

    def poll(self) -> float:
        percent, text = summary(read_progress(self.root, self.since))
        if percent > self.shown and self._update is not None:
            self.shown = percent
            self._update(percent, text)
        return self.shown

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.poll()
            except Exception:  # the UI's progress must never break the training  # noqa: BLE001
                continue

    def __exit__(self, exc_type, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if exc_type is None and self._update is not None:
            found = read_progress(self.root, self.since)
            text = summary(found)[1] if found else "nothing to train: reused from the cache"
            self._update(100.0, text)
