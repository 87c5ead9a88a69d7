from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch

from distill.training.parallel import map_in_processes


def touch_then_sleep(path: str) -> None:
    """A worker's job: say it started, then outlive any test."""
    Path(path).touch()
    time.sleep(120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_worker_dies_with_the_process_that_spawned_it(tmp_path):
    """SIGKILL the process that started a background job (nothing of its own runs): the kernel
    stops the worker too, instead of leaving it orphaned with its job."""
    started = tmp_path / "started"
    script = textwrap.dedent(
        f"""
        import time
        from distill.training.parallel import InBackground
        from tests.distill.training.test_parallel import touch_then_sleep
        job = InBackground(touch_then_sleep, ({str(started)!r},))
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[3])
    workers: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert parent.poll() is None and time.monotonic() < deadline, "the job never started"
            time.sleep(0.1)
        workers = psutil.Process(parent.pid).children(recursive=True)
        assert workers
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert not alive, f"orphaned: {[w.pid for w in alive]}"
    finally:  # a failed check leaves nothing running either
        parent.kill()
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()


def where_and_threads() -> tuple[int, int]:
    return os.getpid(), torch.get_num_threads()


def test_a_single_job_runs_here_unless_told_to_take_one_thread_elsewhere():
    here = map_in_processes(where_and_threads, [()], workers=2)
    assert here[0][0] == os.getpid()
    pid, threads = map_in_processes(where_and_threads, [()], workers=2, one_in_process=False)[0]
    assert pid != os.getpid() and threads == 1
    assert map_in_processes(where_and_threads, [()], workers=1, one_in_process=False)[0][0] == (
        os.getpid()
    )
