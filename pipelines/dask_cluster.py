"""A real Dask cluster as local processes: `dask scheduler` and `dask worker`s on 127.0.0.1.

For tests and benchmarks of `runner.dask_address` (not a LocalCluster: separate processes that
connect over TCP, as on a real cluster), and for trying that setting on one machine:

    with LocalProcessCluster(Path("/tmp/dask")) as cluster:
        cluster.add_worker(); cluster.add_worker()
        ... RunnerConfig(kind="dask", dask_address=cluster.address) ...
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

DASK = Path(sys.executable).with_name("dask")


class LocalProcessCluster:
    """A scheduler (random port) and workers added one by one; each in its own process group."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.scheduler_file = folder / "scheduler.json"
        self.processes: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self._start([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", self.scheduler_file], "scheduler")  # fmt: skip
        self._wait(self.scheduler_file.exists, "the scheduler file")
        self.address = json.loads(self.scheduler_file.read_text())["address"]

    def add_worker(self, prefix: list[str] | None = None) -> None:
        """One single-threaded worker; `prefix` wraps the command (e.g. in `unshare`)."""
        before = self.n_workers()
        self._start([*(prefix or []), DASK, "worker", "--scheduler-file", self.scheduler_file,
                     "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                    f"worker{len(self.processes)}")  # fmt: skip
        self._wait(lambda: self.n_workers() > before, "a worker to join")

    def n_workers(self) -> int:
        return len(self.run(lambda: 1))

    def run(self, fn: Callable) -> dict:
        """`fn` on every worker: {worker address: result}."""
        from distributed import Client

        with Client(self.address, timeout=30) as client:
            return client.run(fn)

    def _start(self, argv: list, name: str) -> None:
        log = self.folder / f"{name}.log"
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(
                [str(a) for a in argv], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes.append(process)
        self.logs.append(log)

    def _wait(self, condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        """Until `condition()`; a process of this cluster that exits meanwhile is an error with
        the end of its log (instead of a timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process, log in zip(self.processes, self.logs, strict=True):
                if process.poll() is not None:
                    tail = log.read_text()[-2000:]
                    raise RuntimeError(f"{process.args!r} exited: {tail}")
            try:
                if condition():
                    return
            except OSError:  # the scheduler is not listening yet
                pass
            time.sleep(0.3)
        raise TimeoutError(f"waited {timeout:.0f} s for {what}")

    def __enter__(self) -> LocalProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for process in reversed(self.processes):  # workers first, then the scheduler
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
