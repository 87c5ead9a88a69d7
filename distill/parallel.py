"""Run independent trainings side by side, each in its own process with one torch thread.

On a small machine two one-thread trainings finish far sooner than two two-thread ones in a row.
Processes are spawned (no forked torch/OpenMP state); an interrupt (Ctrl-C, SIGTERM turned into
KeyboardInterrupt by the CLI) terminates the workers at once instead of waiting for their jobs.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch


def _in_worker(fn: Callable[..., Any], args: tuple) -> Any:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return fn(*args)


def map_in_processes(
    fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int, spawn: bool = False
) -> list[Any]:
    """[fn(*job) for job in jobs], in `workers` processes when there is more than one job and
    worker, else in order in this process, unless `spawn` (then always in spawned processes of
    one torch thread: for work that runs beside other work). `fn` must be importable."""
    if not spawn and (workers <= 1 or len(jobs) <= 1):
        return [fn(*job) for job in jobs]
    if not jobs:
        return []
    workers = max(workers, 1)
    pool = ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")
    )
    try:
        futures = [pool.submit(_in_worker, fn, job) for job in jobs]
        return [f.result() for f in futures]
    except BaseException:
        # no public API stops a running worker; without this an interrupted run waits for it
        for process in list(pool._processes.values()):  # noqa: SLF001
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class InBackground:
    """fn(*args) in one spawned one-thread process, started at construction: work that runs
    beside this process's own. `result()` waits for it; `stop()` terminates it if still running
    (call it in a `finally`, so a failed or interrupted caller leaves nothing behind)."""

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        self._future = self._pool.submit(_in_worker, fn, args)

    def result(self) -> Any:
        return self._future.result()

    def stop(self) -> None:
        if not self._future.done():
            for process in list(self._pool._processes.values()):  # noqa: SLF001
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
