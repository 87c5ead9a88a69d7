"""Task runners from config: Prefect's default (threads, local) or Dask via prefect-dask."""

from __future__ import annotations

from pipelines.config import RunnerConfig


def task_runner(config: RunnerConfig):
    """A Prefect task runner for teacher shard tasks."""
    if config.kind == "local":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=1)  # torch already uses every core
    from prefect_dask import DaskTaskRunner

    if config.dask_address:
        return DaskTaskRunner(address=config.dask_address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": config.dask_workers,
            "threads_per_worker": 1,
            "processes": True,
        }
    )
