"""Prefect flow `backfill`: one model per day, each built as of that day's cut-off (00:00 UTC)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, get_run_logger

from distill.train import apply_threads
from pipelines.config import RunConfig, load_config
from pipelines.distill_flow import distill, ingest_task
from pipelines.failures import STOP_HOOKS
from storage.errors import ConfigError
from storage.registry import Registry
from storage.workdir import WorkDir


def cutoff(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def days(start: date, end: date) -> list[date]:
    if end < start:
        raise ConfigError(f"backfill end {end} is before start {start}")
    return [start + timedelta(days=i) for i in range((end - start).days + 1)]


@flow(name="backfill", log_prints=True, **STOP_HOOKS)
def backfill(
    start: date, end: date, params: RunConfig | None = None, config_path: str | None = None
) -> dict:
    """Build (without serving) a model as of each day; days that already have one are skipped."""
    log = get_run_logger()
    params = params or load_config(Path(config_path) if config_path else None)
    apply_threads(params.threads)
    registry = Registry(WorkDir(params.work_dir).registry, params.model_name)
    dataset_path = ingest_task(params.dataset, params.work_dir)
    built, skipped = [], []
    for day in days(start, end):
        if registry.find(as_of_day=day.isoformat()):
            skipped.append(day.isoformat())
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
        built.append(
            {
                "day": day.isoformat(),
                "version": result.publish.version,
                "teacher_texts_encoded": result.teacher.get("item_texts_encoded", 0)
                + result.teacher.get("user_texts_encoded", 0),
            }
        )
    return {"built": built, "skipped": skipped}
