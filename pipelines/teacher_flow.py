"""Prefect flow `teacher`: prepare (texts, embeddings, head) -> one task per shard -> commit."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.tasks import exponential_backoff

from distill.teacher import labels, stage
from distill.teacher.base import TeacherConfig
from distill.teacher.cache import TeacherCache, TeacherPlan
from distill.teacher.prepare import prepare
from distill.teacher.warm import HeadsWarmStart
from pipelines.config import RunnerConfig
from pipelines.progress import TrainingProgress
from pipelines.runners import task_runner
from storage.datasets import Dataset
from storage.shards import ShardInfo
from storage.split import make_split
from storage.workdir import WorkDir


@task(name="teacher-prepare", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def prepare_task(
    config: TeacherConfig,
    dataset_path: str,
    cutoff: int | None,
    work_dir: str,
    eval_users: int | None = None,
    warm: HeadsWarmStart | None = None,
) -> tuple[str, dict]:
    """Texts, LM embeddings (only new texts are encoded) and the adapted head (from last
    night's with `warm`)."""
    dataset = Dataset(Path(dataset_path))
    stats: dict = {}
    split = make_split(dataset, cutoff=cutoff, eval_users=eval_users)
    adapters = WorkDir(Path(work_dir)).adapters
    heads = TrainingProgress(adapters, "teacher-head-progress", "teacher heads")
    with heads:  # head epochs in the UI
        plan = prepare(config, dataset, split, work_dir=Path(work_dir), stats=stats, warm=warm)
    return plan.cache_dir, stats


@task(
    name="teacher-shard",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    cache_policy=NO_CACHE,
)
def shard_task(cache_dir: str, key: str, work_dir: str) -> dict:
    """Soft labels for one user range, written as one atomic shard (reused if already done)."""
    return labels.score_shard(Path(cache_dir), key, work_dir=Path(work_dir)).__dict__


@task(name="teacher-verify", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def repair_task(cache_dir: str, work_dir: str) -> list[str]:
    """Check every committed shard's hash; recompute only the damaged ones."""
    return labels.repair(Path(cache_dir), work_dir=Path(work_dir))


@task(name="teacher-commit", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def commit_task(cache_dir: str, infos: list[dict]) -> dict:
    """Write the manifest last: the cache becomes visible to readers all at once."""
    return labels.commit(Path(cache_dir), [ShardInfo(**i) for i in infos])


@dataclass(frozen=True)
class FlowSteps:
    """The teacher stage's steps as this flow's tasks: one task per shard, on the flow's task
    runner (threads, or a Dask cluster)."""

    config: TeacherConfig
    dataset_path: str
    cutoff: int | None
    work_dir: str
    eval_users: int | None
    warm: HeadsWarmStart | None

    def prepare(self) -> tuple[TeacherPlan, dict]:
        cache_dir, stats = prepare_task(
            self.config, self.dataset_path, self.cutoff, self.work_dir, self.eval_users, self.warm
        )
        return TeacherCache(Path(cache_dir)).plan, stats

    def repair(self, cache_dir: Path) -> list[str]:
        return repair_task(str(cache_dir), self.work_dir)

    def score(self, cache_dir: Path, keys: list[str]) -> Iterator[ShardInfo]:
        futures = shard_task.map(str(cache_dir), keys, self.work_dir)
        for future in as_completed(futures):
            yield ShardInfo(**future.result())

    def commit(self, cache_dir: Path, infos: list[ShardInfo]) -> dict:
        return commit_task(str(cache_dir), [i.__dict__ for i in infos])


@flow(name="teacher", log_prints=True)
def teacher_flow(
    config: TeacherConfig,
    dataset_path: str,
    cutoff: int | None = None,
    work_dir: str = "work",
    eval_users: int | None = None,
    warm: HeadsWarmStart | None = None,
) -> stage.TeacherRun:
    """Run the teacher once over all (user, item) pairs (`stage.orchestrate` over this flow's
    tasks); the UI shows the shards' progress as the `teacher-progress` artifact."""
    progress: UUID | None = None

    def on_shard(done: int, total: int) -> None:
        nonlocal progress
        if progress is None:  # before the first shard
            progress = cast(  # called in a flow, Prefect's sync/async helper returns the id
                UUID,
                create_progress_artifact(0.0, key="teacher-progress", description="teacher shards"),
            )
        else:
            update_progress_artifact(progress, 100.0 * done / total)

    steps = FlowSteps(config, dataset_path, cutoff, work_dir, eval_users, warm)
    return stage.orchestrate(steps, on_shard=on_shard, logger=get_run_logger())


def run_teacher_flow(
    config: TeacherConfig,
    dataset: Dataset,
    cutoff: int | None,
    work_dir: Path,
    runner: RunnerConfig,
    eval_users: int | None = None,
) -> stage.TeacherRun:
    """Call the flow with the configured task runner."""
    configured = teacher_flow.with_options(task_runner=task_runner(runner, work_dir))
    return configured(config, str(dataset.path), cutoff, str(work_dir), eval_users)
