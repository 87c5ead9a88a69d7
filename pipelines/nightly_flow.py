"""Prefect flow `nightly`: incremental re-distillation from the inbox, or nothing if it is empty."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from distill.training.loop import apply_threads
from pipelines.config import RunConfig, load_config
from pipelines.distill_flow import DistillRun, distill
from pipelines.failures import STOP_HOOKS
from storage.datasets import ingest, load_dataset
from storage.inbox import ingest_inbox, mark_processed


@dataclass(frozen=True)
class InboxBatch:
    """What the inbox held tonight: the dataset version to train on (the current one when the
    inbox was empty), the files used, and the version it was built from."""

    dataset_path: Path
    files: dict[str, list[Path]]
    base: str | None = None  # the version the inbox was merged into; None: nothing new
    version: str | None = None

    @property
    def new_data(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class NightlyRun:
    """One night: the inbox batch, the distill run (None when the inbox was empty) and the
    inbox files moved to processed/."""

    inbox: InboxBatch
    run: DistillRun | None = None
    moved: tuple[Path, ...] = ()

    @property
    def status(self) -> str:
        return "processed" if self.run is not None else "no new data"


@task(name="ingest-inbox", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def inbox_task(params: RunConfig) -> InboxBatch:
    """Merge the inbox into a new dataset version (deduplicated); nothing if the inbox is empty."""
    work = params.work_dir
    try:
        current = load_dataset(work, params.dataset.name)
    except FileNotFoundError:  # first night: start from the configured source
        first = ingest(params.dataset, work_dir=work)
        current = load_dataset(work, first.name, first.version)
    result, files = ingest_inbox(work, current, params.dataset)
    if result is None:
        return InboxBatch(current.path, files)
    return InboxBatch(result.path, files, base=current.ref, version=result.version)


@task(name="mark-processed", cache_policy=NO_CACHE)
def processed_task(files: dict[str, list[Path]]) -> list[Path]:
    """Move the inbox files this run used to processed/."""
    return mark_processed(files)


@flow(name="nightly", log_prints=True, **STOP_HOOKS)
def nightly(params: RunConfig | None = None, config_path: str | None = None) -> NightlyRun:
    """Ingest new inbox files, re-run the teacher on what changed, retrain, publish via the gate."""
    log = get_run_logger()
    params = params or load_config(Path(config_path) if config_path else None)
    apply_threads(params.threads)
    inbox = inbox_task(params)
    if not inbox.new_data:
        message = "No new data in the inbox: no teacher work, nothing trained, nothing published."
        log.info(message)
        create_markdown_artifact(
            f"# Nightly run\n\n{message}\n",
            key="kdrec-nightly",
            description="Nightly re-distillation",
        )
        return NightlyRun(inbox)
    log.info("new dataset version %s from %s", inbox.version, inbox.files)
    if params.nightly_warm_start and params.distill.init == "teacher":
        warm = params.distill.model_copy(update={"init": "previous"})
        params = params.model_copy(update={"distill": warm})
        log.info("warm start: the student starts from the published model when it fits")
    result = distill(
        params,
        dataset_path=str(inbox.dataset_path),
        manifest_extra={"nightly_base": inbox.base},
        nightly=True,
    )
    moved = processed_task(inbox.files)
    create_markdown_artifact(
        f"# Nightly run\n\nnew version {inbox.version} (from {inbox.base} + "
        f"{len(moved)} inbox files)\n\npublish: {result.publish.reason}\n",
        key="kdrec-nightly",
        description="Nightly re-distillation",
    )
    return NightlyRun(inbox, result, tuple(moved))
