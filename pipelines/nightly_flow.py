"""Prefect flow `nightly`: incremental re-distillation from the inbox, or nothing if it is empty."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from distill.train import apply_threads
from pipelines.config import RunConfig, load_config
from pipelines.distill_flow import distill
from pipelines.failures import STOP_HOOKS
from storage.datasets import ingest, load_dataset
from storage.inbox import ingest_inbox, mark_processed


@task(name="ingest-inbox", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def inbox_task(params: RunConfig) -> dict:
    """Merge the inbox into a new dataset version (deduplicated); nothing if the inbox is empty."""
    work = params.work_dir
    try:
        current = load_dataset(work, params.dataset.name)
    except FileNotFoundError:  # first night: start from the configured source
        first = ingest(params.dataset, work_dir=work)
        current = load_dataset(work, first.name, first.version)
    result, files = ingest_inbox(work, current, params.dataset)
    names = {k: [str(p) for p in v] for k, v in files.items()}
    if result is None:
        return {"new_data": False, "dataset_path": str(current.path), "files": names}
    return {
        "new_data": True,
        "dataset_path": str(result.path),
        "files": names,
        "base": current.ref,
        "version": result.version,
    }


@task(name="mark-processed", cache_policy=NO_CACHE)
def processed_task(files: dict[str, list[str]]) -> list[str]:
    """Move the inbox files this run used to processed/."""
    return [str(p) for p in mark_processed({k: [Path(p) for p in v] for k, v in files.items()})]


@flow(name="nightly", log_prints=True, **STOP_HOOKS)
def nightly(params: RunConfig | None = None, config_path: str | None = None) -> dict:
    """Ingest new inbox files, re-run the teacher on what changed, retrain, publish via the gate."""
    log = get_run_logger()
    params = params or load_config(Path(config_path) if config_path else None)
    apply_threads(params.threads)
    inbox = inbox_task(params)
    if not inbox["new_data"]:
        message = "No new data in the inbox: no teacher work, nothing trained, nothing published."
        log.info(message)
        create_markdown_artifact(
            f"# Nightly run\n\n{message}\n",
            key="kdrec-nightly",
            description="Nightly re-distillation",
        )
        return {"status": "no new data", **inbox}
    log.info("new dataset version %s from %s", inbox["version"], inbox["files"])
    if params.nightly_warm_start and params.distill.init == "teacher":
        warm = params.distill.model_copy(update={"init": "previous"})
        params = params.model_copy(update={"distill": warm})
        log.info("warm start: the student starts from the published model when it fits")
    result = distill(
        params,
        dataset_path=inbox["dataset_path"],
        manifest_extra={"nightly_base": inbox["base"]},
        nightly=True,
    )
    moved = processed_task(inbox["files"])
    create_markdown_artifact(
        f"# Nightly run\n\nnew version {inbox['version']} (from {inbox['base']} + "
        f"{len(moved)} inbox files)\n\npublish: {result.publish.reason}\n",
        key="kdrec-nightly",
        description="Nightly re-distillation",
    )
    return {
        "status": "processed",
        "publish": result.publish.as_json(),
        "moved": moved,
        "run_dir": str(result.run_dir),
        "teacher": result.teacher,
        "timings": result.timings,
    }
