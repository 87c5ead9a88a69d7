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


def map_in_processes(fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int) -> list[Any]:
    """[fn(*job) for job in jobs], in `workers` processes when there is more than one job and
    worker, else in order in this process. `fn` must be importable (a module-level function)."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*job) for job in jobs]
    pool = ProcessPoolExecutor(
        min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")
    )
    try:
        futures = [pool.submit(_in_worker, fn, job) for job in jobs]
        return [f.result() for f in futures]
    except BaseException:
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Stop the pool's running workers now: no public API does, and without this an interrupted
    caller waits for their jobs to finish."""
    for process in list(pool._processes.values()):  # noqa: SLF001
        process.terminate()


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
            _terminate(self._pool)
        self._pool.shutdown(wait=True, cancel_futures=True)
