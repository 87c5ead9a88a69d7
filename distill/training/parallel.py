"""Run independent trainings side by side, each in its own process with one torch thread.

On a small machine two one-thread trainings finish far sooner than two two-thread ones in a row.
Processes are spawned (no forked torch/OpenMP state); an interrupt (Ctrl-C, SIGTERM turned into
KeyboardInterrupt by the CLI) terminates the workers at once instead of waiting for their jobs, and
on Linux a worker dies with the process that spawned it, however that one ends.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _pool(workers: int) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


def die_with_parent(parent: int) -> None:
    """First thing in a worker: on Linux, ask the kernel to SIGKILL this process when the thread
    that spawned it ends, whether it returns, is interrupted or is killed. Without it a worker
    spawned while the CLI was stopping (a queued job starting as the running ones are
    terminated) outlived the command and trained on, orphaned. If `parent` is already gone,
    exit now: the request would come too late."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _in_worker(fn: Callable[..., Any], args: tuple) -> Any:
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return fn(*args)


def map_in_processes(
    fn: Callable[..., Any], jobs: Sequence[tuple], *, workers: int, one_in_process: bool = True
) -> list[Any]:
    """[fn(*job) for job in jobs], in `workers` processes when there is more than one job and
    worker, else in order in this process. `one_in_process=False`: a single job (with
    `workers` > 1) also runs in a one-thread process, for a caller that knows other work runs
    beside it. `fn` must be importable (a module-level function)."""
    if workers <= 1 or not jobs or (len(jobs) == 1 and one_in_process):
        return [fn(*job) for job in jobs]
    pool = _pool(min(workers, len(jobs)))
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
        self._pool = _pool(1)
        self._future = self._pool.submit(_in_worker, fn, args)

    def result(self) -> Any:
        return self._future.result()

    def stop(self) -> None:
        if not self._future.done():
            _terminate(self._pool)
        self._pool.shutdown(wait=True, cancel_futures=True)
