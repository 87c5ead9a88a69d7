"""Prefect flow `backfill`: one model per day, each built as of that day's cut-off (00:00 UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger

from distill.training.loop import apply_threads
from pipelines.config import RunConfig, load_config
from pipelines.distill_flow import distill, ingest_task
from pipelines.failures import STOP_HOOKS
from storage.errors import ConfigError
from storage.registry import Registry
from storage.workdir import WorkDir


@dataclass(frozen=True)
class BuiltDay:
    """A model built as of one day, and how many texts the LM encoded for it."""

    day: str  # YYYY-MM-DD
    version: str | None  # the registry version (None when publishing is off)
    teacher_texts_encoded: int


@dataclass(frozen=True)
class BackfillRun:
    """The days built and the days skipped because a model as of them existed."""

    built: list[BuiltDay] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def cutoff(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def days(start: date, end: date) -> list[date]:
    if end < start:
        raise ConfigError(f"backfill end {end} is before start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


@flow(name="backfill", log_prints=True, **STOP_HOOKS)
def backfill(
    start: date, end: date, params: RunConfig | None = None, config_path: str | None = None
) -> BackfillRun:
    """Build (without serving) a model as of each day; days that already have one are skipped."""
    log = get_run_logger()
    params = params or load_config(Path(config_path) if config_path else None)
    apply_threads(params.threads)
    registry = Registry(WorkDir(params.work_dir).registry, params.model_name)
    dataset_path = str(ingest_task(params.dataset, params.work_dir).path)
    run = BackfillRun()
    for day in days(start, end):
        if registry.find(as_of_day=day.isoformat()):
            run.skipped.append(day.isoformat())
            log.info("%s: a model as of this day exists, skipping", day)
            continue
        day_params = params.model_copy(
            update={"split": params.split.model_copy(update={"as_of": cutoff(day)})}
        )
        result = distill(
            day_params,
            dataset_path=dataset_path,
            set_current=False,
            manifest_extra={"as_of_day": day.isoformat(), "as_of": cutoff(day)},
        )
        run.built.append(
            BuiltDay(day.isoformat(), result.publish.version, result.teacher.texts_encoded)
        )
    return run
