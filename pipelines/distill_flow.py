"""Prefect flow `distill`: ingest -> split -> teacher (subflow) -> student (subflow) -> publish."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from distill.evaluation.report.model import Report
from distill.evaluation.report.render import embedded_images, markdown, write_markdown
from distill.serving import bundle as bundle_io
from distill.student.jobs import start_sasrec_ahead
from distill.teacher.stage import TeacherRun
from distill.teacher.warm import served_heads
from distill.training.loop import apply_threads
from distill.training.parallel import InBackground
from pipelines.config import RunConfig
from pipelines.failures import STOP_HOOKS
from pipelines.runners import task_runner
from pipelines.student_flow import student_flow
from pipelines.teacher_flow import teacher_flow
from storage.atomic import atomic_write_json, read_json
from storage.datasets import Dataset, DatasetConfig, ingest
from storage.holdout import hold_out_items
from storage.registry import Bundle, GateConfig, Provenance, PublishResult, Registry
from storage.rundir import RunDir
from storage.split import Split, make_split
from storage.workdir import WorkDir


@dataclass(frozen=True)
class DistillRun:
    """What one `distill` flow run leaves: its run folder (report.{json,md}, plots, the staged
    bundle, publish.json), the report, the gate's decision, the teacher stage's summary and the
    stage timings in seconds."""

    run_dir: RunDir
    report: Report
    publish: PublishResult
    teacher: TeacherRun
    timings: dict[str, float]


@task(name="ingest", retries=1, retry_delay_seconds=2, cache_policy=NO_CACHE)
def ingest_task(dataset: DatasetConfig, work_dir: Path) -> Dataset:
    """Validate and write the dataset version (a no-op for unchanged input)."""
    result = ingest(dataset, work_dir=work_dir)
    get_run_logger().info(
        "dataset %s@%s (%s)", result.name, result.version, "new" if result.created else "unchanged"
    )
    return Dataset(result.path)


@task(name="hold-out-new-items", cache_policy=NO_CACHE)
def holdout_task(dataset: Dataset, share: float, seed: int, work_dir: Path) -> Dataset:
    """The item-cold-start protocol: the dataset version without a seeded share of the items'
    interactions (the items stay in the catalog); everything downstream trains on it."""
    held = hold_out_items(dataset, share=share, seed=seed, work_dir=work_dir)
    get_run_logger().info(
        "new items: %d items held out with %d interactions -> %s",
        len(held.item_idx),
        held.interactions.height,
        held.warm.ref,
    )
    return held.warm


@task(name="split", cache_policy=NO_CACHE)
def split_task(dataset: Dataset, cutoff: int | None, eval_users: int | None) -> Split:
    """Build (or reuse) the stored split."""
    return make_split(dataset, cutoff=cutoff, eval_users=eval_users)


@task(name="publish", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_task(
    registry: Registry,
    run_dir: RunDir,
    provenance: Provenance,
    *,
    force: bool,
    set_current: bool,
    versus: dict | None = None,
    gate: GateConfig | None = None,
) -> PublishResult:
    """Publish the staged bundle through the regression gate (the candidate against the served
    model on the same validation fold: `versus`); switch CURRENT atomically."""
    files = {p.name: p.read_bytes() for p in sorted(run_dir.bundle.iterdir())}
    return registry.publish(
        files,
        provenance,
        validation=read_json(run_dir.validation),
        volatile=(bundle_io.REPORT,),  # the report's timings change between identical models
        force=force,
        set_current=set_current,
        versus=versus,
        gate=gate,
    )


def write_publish(run_dir: RunDir, report: Report, publish: PublishResult) -> None:
    """The gate's decision beside the report (publish.json) and report.md with it; report.json,
    which the bundle carries byte for byte, is not rewritten."""
    atomic_write_json(run_dir.publish, publish.as_json())
    write_markdown(report, run_dir, publish=publish.line)


def _start_sasrec(params: RunConfig, dataset: Dataset, split: Split) -> InBackground:
    return start_sasrec_ahead(
        dataset,
        split,
        params.sasrec,
        params.distill,
        params.train,
        seed=params.seeds[0],
        checkpoint_root=WorkDir(params.work_dir).students,
    )


def _artifacts(report: Report, publish: PublishResult, run_dir: RunDir) -> None:
    create_table_artifact(
        report.summary_rows(), key="kdrec-eval-table", description="Test metrics, every model"
    )
    create_markdown_artifact(
        markdown(report, embedded_images(run_dir.path), publish=publish.line),
        key="kdrec-report",
        description="Run report",
    )
    create_table_artifact(
        bundle_rows(publish), key="kdrec-bundle", description="The bundle this run published"
    )


def bundle_rows(publish: PublishResult) -> list[dict]:
    """The published bundle as field/value rows (a file:// link does nothing in a browser)."""
    if publish.path is None:
        return [{"field": "published", "value": f"no: {publish.reason}"}]
    bundle = Bundle(publish.path)
    manifest = bundle.manifest
    validation = manifest.get("validation", {})
    rows = {
        "version": publish.version,
        "dataset": manifest.get("dataset"),
        "teacher fingerprint": manifest.get("teacher_fingerprint"),
        "validation NDCG@10": round(validation["ndcg@10"], 4) if "ndcg@10" in validation else None,
        "gate": manifest.get("gate"),
        "signed": bundle.signed,
        "path": str(publish.path.resolve()),
    }
    return [{"field": k, "value": str(v)} for k, v in rows.items()]


@flow(name="distill", log_prints=True, **STOP_HOOKS)
def distill(
    params: RunConfig,
    dataset_path: str | None = None,
    manifest_extra: dict | None = None,
    set_current: bool = True,
    nightly: bool = False,
) -> DistillRun:
    """Ingest, score with the teacher, train the students, evaluate, publish.

    The recipe's regime (full, or sampled for large catalogs) is picked from the dataset's item
    count once it is known and logged (pipelines/regime.py); everything after uses it.
    `dataset_path` skips ingest (nightly runs pass the version they built); `set_current=False`
    stores the bundle without serving it (backfills); `manifest_extra` is recorded in the bundle.
    `nightly`: a night costs what changed: the teacher's heads start from the served model's
    (with `nightly_warm_start`) and only the distilled student is trained.
    """
    log = get_run_logger()
    log.info("threads: %d", apply_threads(params.threads))
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    dataset = (
        Dataset(Path(dataset_path))
        if dataset_path
        else ingest_task(params.dataset, params.work_dir)
    )
    if params.split.new_items is not None:
        dataset = holdout_task(
            dataset, params.split.new_items, params.split.new_items_seed, params.work_dir
        )
    params, regime = params.for_catalog(dataset.n_items)
    log.info("%s", regime.line())
    split = split_task(dataset, params.split.as_of, params.split.eval_users)
    timings["ingest_split"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    heads = None
    if nightly and params.nightly_warm_start:
        heads = served_heads(params.work_dir, params.model_name, params.warm_patience)
    sasrec = (
        None if nightly else _start_sasrec(params, dataset, split)
    )  # it trains beside the teacher
    try:
        runner = task_runner(params.runner, params.work_dir)
        teacher = teacher_flow.with_options(task_runner=runner)(
            params.teacher,
            str(dataset.path),  # subflow parameters stay strings (the Prefect UI's form)
            params.split.as_of,
            str(params.work_dir),
            params.split.eval_users,
            heads,
        )
        timings["teacher"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        # the student stage's SASRec job waits on that checkpoint's lock, then finds it done
        students = student_flow(
            params,
            str(dataset.path),
            str(teacher.cache.folder),
            str(WorkDir(params.work_dir).new_run().path),
            nightly,
        )
        timings["student"] = time.perf_counter() - t2
        if sasrec is not None:
            try:
                sasrec.result()
            except Exception as exc:  # the student stage trained it instead
                log.warning("SASRec trained beside the teacher failed: %s", exc)
    finally:
        if sasrec is not None:
            sasrec.stop()
    report, run_dir = students.report, students.run_dir
    publish = PublishResult.disabled()
    if params.publish:
        publish = publish_task(
            Registry(WorkDir(params.work_dir).registry, params.model_name),
            run_dir,
            Provenance(
                dataset=dataset.ref,
                split=split.name,
                teacher_fingerprint=teacher.fingerprint,
                metrics={r.model: r.as_json()["metrics"] for r in report.rows},
                config=json.loads(params.model_dump_json()),
                extra=manifest_extra or {},
            ),
            force=params.force_publish,
            set_current=set_current,
            versus=report.served.get("versus_champion"),
            gate=params.gate,
        )
    (log.info if publish.published else log.warning)("publish: %s", publish.reason)
    write_publish(run_dir, report, publish)
    timings["total"] = time.perf_counter() - t0
    log.info("stage timings (s): %s", {k: round(v, 1) for k, v in timings.items()})
    atomic_write_json(
        run_dir.timings,
        {"seconds": {k: round(v, 2) for k, v in timings.items()}, "regime": regime.regime},
    )
    _artifacts(report, publish, run_dir)
    return DistillRun(run_dir, report, publish, teacher, timings)
