"""Prefect flow `student`: train students on cached soft labels, evaluate all, stage a bundle."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from distill.evaluation.new_items import NewItemTargets
from distill.evaluation.report.bars import finish
from distill.evaluation.report.model import Report, versus_current
from distill.evaluation.report.render import champion_line, save_report
from distill.serving.bundle import StudentBundle, bundle_files
from distill.serving.warm_start import warm_start_from
from distill.student import stage
from distill.student.config import FrontierConfig
from distill.student.cost import serving_cost
from distill.student.jobs import JobRunner, TrainJob, run_job
from distill.student.run import StudentRun
from distill.studies import frontier
from distill.studies.champion import head_to_head
from distill.studies.new_item_rows import NewItemsPlan, new_item_rows, new_items_section
from distill.teacher.cache import TeacherCache
from distill.training.loop import available_cores
from distill.training.parallel import InBackground
from pipelines.config import RunConfig
from pipelines.progress import TrainingProgress
from pipelines.regime import choose
from storage.atomic import atomic_write_bytes
from storage.datasets import Dataset
from storage.holdout import HALVES, HeldOutItems
from storage.pseudonyms import id_key
from storage.registry import Registry
from storage.rundir import RunDir
from storage.split import Split, make_split
from storage.workdir import WorkDir


@dataclass(frozen=True)
class StudentResult:
    """What the student stage leaves: its run folder (report.json, plots, the staged bundle,
    validation.json) and the report it wrote there."""

    run_dir: RunDir
    report: Report


@task(
    name="student-job",
    retries=1,
    retry_delay_seconds=5,
    cache_policy=NO_CACHE,
    task_run_name="{label}",
)
def job_task(
    job: TrainJob, split: Split, teacher: TeacherCache | None, label: str, in_process: bool
) -> StudentRun:
    """One arm x seed of the report, in its own one-thread process unless `in_process`; a retry
    resumes from the job's checkpoint."""
    if in_process:
        return run_job(job, split, teacher)
    background = InBackground(run_job, (job, split, teacher))
    try:
        return background.result()
    finally:
        background.stop()


def job_tasks(workers: int) -> JobRunner:
    """Run the jobs as `student-job` tasks, `workers` at a time: each is its own task run in the
    UI, retried on its own."""

    def run(jobs: list[TrainJob], split: Split, teacher: TeacherCache | None) -> list[StudentRun]:
        pool: ThreadPoolTaskRunner[StudentRun] = ThreadPoolTaskRunner(max(workers, 1))
        with pool as runner:
            futures = [
                runner.submit(
                    job_task,
                    parameters={
                        "job": job,
                        "split": split,
                        "teacher": teacher,
                        "label": job.label,
                        "in_process": workers <= 1,
                    },
                )
                for job in jobs
            ]
            return [future.result() for future in futures]

    return run


@task(name="student-train-evaluate", retries=1, retry_delay_seconds=5, cache_policy=NO_CACHE)
def train_evaluate_task(
    params: RunConfig,
    dataset: Dataset,
    split: Split,
    teacher: TeacherCache,
    out: RunDir,
    nightly: bool = False,
) -> StudentResult:
    """Train the students (with and without KD) for every seed; write the report and bundle.
    Their epochs show in the UI as the `student-progress` artifact."""
    log = get_run_logger()
    held = HeldOutItems.of(dataset)
    students = WorkDir(params.work_dir).students
    with TrainingProgress(students, "student-progress", "students (arms x seeds)"):
        result = _train_students(
            params, dataset, split, teacher, new_items=held is not None, nightly=nightly
        )
        lightweight = None
        if params.frontier is not None and not nightly:
            lightweight = _frontier(params, params.frontier, dataset, split, teacher)
    section = None
    if held is not None:  # calibrates every content path on the validation half, in place
        plan = new_items_plan(held, params)
        section = new_items_section(new_item_rows(result, split, teacher, plan), plan)
    best = result.best
    cost = serving_cost(teacher, best, result.sasrec, split)
    registry = Registry(WorkDir(params.work_dir).registry, params.model_name)
    versus = None
    current = registry.current_version()
    if current is not None:  # the served model on this run's validation fold, like for like
        served = registry.bundle(current)
        served.verify()
        versus = head_to_head(
            StudentBundle(served.path), current, best.scorer(split), dataset, split
        ).as_json()
        log.info("%s", champion_line(versus))
    report = finish(result.report, cost, versus_current(versus), section, lightweight)
    save_report(report, out, result.rows)
    for name, data in bundle_files(
        best,
        dataset,
        report,
        quantized=params.quantized_index,
        user_key=id_key(params.work_dir, create=True) if params.pseudonymized else None,
    ).items():
        atomic_write_bytes(out.bundle / name, data)
    atomic_write_bytes(out.validation, json.dumps(best.valid).encode())
    for name, bar in report.bars.items():
        log.info(
            "bar %s: %s -> %s (%s)",
            name,
            bar.target,
            bar.value,
            "holds" if bar.holds else "NOT met",
        )
    return StudentResult(out, report)


def _train_students(
    params: RunConfig,
    dataset: Dataset,
    split: Split,
    teacher: TeacherCache,
    *,
    new_items: bool,
    nightly: bool,
) -> stage.Comparison:
    """Every report row (at night only the product: the distilled student, warm-started)."""
    warm = None
    if params.distill.init == "previous":
        ids = dataset.items().get_column("item_id").to_list()
        warm = warm_start_from(WorkDir(params.work_dir).registry, params.model_name, ids)
    plan = stage.QualityPlan(
        student=params.student,
        sasrec=params.sasrec,
        kd=params.distill,
        loop=params.train,
        seeds=params.seeds,
        content=params.content if params.content.enabled else None,
        checkpoint_root=WorkDir(params.work_dir).students,
        warm=warm,
        warm_patience=params.warm_patience if nightly else None,
        dropoutnet=tuple(params.content.dropoutnet_id_dropout) if new_items else (),
        undistilled=not nightly,
        regime=choose(params.scaling, split.n_items)[0],
    )
    return stage.quality(
        dataset,
        split,
        plan,
        teacher=teacher,
        run=job_tasks(params.train_workers or available_cores()),
    )


def _frontier(
    params: RunConfig,
    config: FrontierConfig,
    dataset: Dataset,
    split: Split,
    teacher: TeacherCache,
) -> dict:
    """The report's frontier section: every shape x seed x with/without the teacher, as
    `student-job` tasks (checkpointed: a re-run trains only what is missing)."""
    jobs, keys = frontier.jobs(
        dataset,
        split,
        teacher.fingerprint,
        params.sasrec,
        params.distill,
        params.train,
        {shape: config.seeds for shape in config.parsed()},
        WorkDir(params.work_dir).students,
    )
    runs = job_tasks(params.train_workers or available_cores())(jobs, split, teacher)
    return frontier.section(keys, runs, dataset, split, config.latency_users)


def new_items_plan(held: HeldOutItems, params: RunConfig) -> NewItemsPlan:
    """The new-items section's plan: the held-out targets in the warm dataset's indices."""
    halves = {half: held.targets(half) for half in HALVES}
    return NewItemsPlan(
        targets=NewItemTargets(held.item_idx, halves),
        share=held.share,
        seed=held.seed,
        content=params.content,
        dropped_users=held.interactions.height - sum(m.nnz for m in halves.values()),
    )


@flow(name="student", log_prints=True)
def student_flow(
    params: RunConfig,
    dataset_path: str,
    teacher_cache: str,
    run_dir: str,
    nightly: bool = False,
) -> StudentResult:
    """Train, evaluate, write report.json, plots and the staged bundle into `run_dir`.
    `nightly`: only the distilled student is trained (the undistilled rows are `kdrec
    quality`'s). The parameters are strings (the Prefect UI's form); the task gets them as the
    typed objects they name."""
    dataset = Dataset(Path(dataset_path))
    split = make_split(dataset, cutoff=params.split.as_of, eval_users=params.split.eval_users)
    teacher = TeacherCache(Path(teacher_cache))
    return train_evaluate_task(params, dataset, split, teacher, RunDir(Path(run_dir)), nightly)
