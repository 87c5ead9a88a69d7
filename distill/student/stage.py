"""The student stage as plain functions: every report arm over seeds, evaluated under the
standard protocol, compared with the plain models (`quality`). The Prefect student flow and the
CLI call these; nothing here knows about Prefect. One student: `run.py`; its jobs: `jobs.py`;
the report rows: `rows.py`; serving cost: `cost.py`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from distill.evaluation.report.build import build_report, paired_test
from distill.evaluation.report.model import ModelRow, Report
from distill.student.config import StudentConfig
from distill.student.content import (
    ContentConfig,
)
from distill.student.fit import DistillConfig
from distill.student.jobs import JobRunner, TrainJob, plain_kd, run_jobs, train_job
from distill.student.rows import baseline_rows, student_row, teacher_row
from distill.student.run import StudentRun
from distill.student.warm_start import WarmStart
from distill.teacher.cache import TeacherCache
from distill.teacher.soft_labels import SoftLabels
from distill.training.loop import LoopConfig
from storage.datasets import Dataset
from storage.split import Split

log = logging.getLogger(__name__)


SASREC_ROW = "SASRec (no teacher)"


def arms(student: StudentConfig, sasrec: StudentConfig) -> dict[str, StudentConfig]:
    """The undistilled models of the report, by row name: the plain SASRec, and the undistilled
    version of every student kind offered (the configured student, and the other kind with its
    defaults). A student identical to the plain SASRec is that row, trained once."""
    label = student.kind.replace("_", "-")
    plain = {SASREC_ROW: sasrec}
    if student != sasrec:
        plain[f"Student {label} (no KD)"] = student
    other = "sequential" if student.kind == "two_tower" else "two_tower"
    if other == "two_tower":
        # the two-tower as offered: pooled history + a projection of the LM item embeddings
        plain["Student two-tower (no KD)"] = StudentConfig(
            kind="two_tower", text_projection=True, dropout=0.3
        )
    elif StudentConfig(kind="sequential") not in plain.values():
        plain["Student sequential (no KD)"] = StudentConfig(
            kind="sequential", sampled_negatives=student.sampled_negatives
        )
    return plain


@dataclass(frozen=True)
class QualityPlan:
    """What `quality` trains: the report's arms, their settings and seeds, where checkpoints go."""

    student: StudentConfig  # the distilled student (and its undistilled twin)
    sasrec: StudentConfig  # the plain SASRec row
    kd: DistillConfig
    loop: LoopConfig
    seeds: list[int]
    content: ContentConfig | None = None  # the distilled student's content path (None: off)
    checkpoint_root: Path | None = None  # content-keyed checkpoints, reused across runs
    warm: WarmStart | None = None  # kd.init "previous": the published model to start from
    warm_patience: int | None = None  # a student that starts from `warm` stops after this
    # the DropoutNet-style arm (the new-items protocol's baseline): one row per ID dropout
    dropoutnet: tuple[float, ...] = ()
    # train the undistilled rows (plain SASRec, the other student kind); a night does not: they
    # are report rows for `kdrec quality`, not the product
    undistilled: bool = True
    regime: str = "full"  # the recipe's regime these settings come from (pipelines/regime.py)


DROPOUTNET_ROW = "Student DropoutNet (no teacher)"
# the cold-start recipe an engineer tries first: SASRec whose item vectors add a projection of the
# LM item embeddings, with every item's ID embedding dropped at a share of the steps (DropoutNet)
DROPOUTNET = StudentConfig(kind="sequential", text_projection=True, id_dropout=0.5)


def dropoutnet_row(id_dropout: float) -> str:
    """The report row of the DropoutNet-style student at one ID dropout."""
    return f"{DROPOUTNET_ROW}, ID dropout {id_dropout:g}"


@dataclass
class Comparison:
    """Every report row plus the runs the bundle, the cost measurement and the new-items
    evaluation need."""

    report: Report
    rows: list[ModelRow]
    best: StudentRun  # the distilled run with the best validation NDCG@10 (what is published)
    sasrec: StudentRun | None  # seed 0 of the plain SASRec (None: the undistilled rows skipped)
    runs: dict[str, list[StudentRun]]  # every student row's runs, by row name


def quality(
    dataset: Dataset,
    split: Split,
    plan: QualityPlan,
    *,
    teacher: TeacherCache,
    workers: int = 1,
    run: JobRunner | None = None,
) -> Comparison:
    """Every report row on the test fold under the standard protocol. Each (arm, seed) is one
    job; with `workers` > 1 they run in that many processes of one torch thread each (on a small
    machine, two one-thread trainings finish far sooner than two two-thread ones in a row).
    `run` replaces that (the student flow makes each job a Prefect task)."""
    soft = SoftLabels(teacher)
    rows = baseline_rows(split)
    jobs: list[TrainJob] = []

    def submit(
        config: StudentConfig,
        this_kd: DistillConfig,
        name: str,
        content: ContentConfig | None = None,
    ) -> list[int]:
        first = len(jobs)
        if this_kd.init == "previous" and plan.warm is not None and plan.warm_patience:
            this_kd = this_kd.model_copy(update={"patience": plan.warm_patience})
        for seed in plan.seeds:
            job = train_job(
                dataset,
                split,
                soft.fingerprint,
                config,
                this_kd,
                plan.loop,
                seed,
                plan.checkpoint_root,
                plan.warm,
                name,
            )
            jobs.append(replace(job, content=content))
        return list(range(first, len(jobs)))

    student, kd = plan.student, plan.kd
    no_kd = plain_kd(kd)
    plain_arms = arms(student, plan.sasrec)
    for id_dropout in plan.dropoutnet:
        plain_arms[dropoutnet_row(id_dropout)] = DROPOUTNET.model_copy(
            update={"id_dropout": id_dropout}
        )
    if not plan.undistilled:
        plain_arms = {}
    label = student.kind.replace("_", "-")
    kd_name = f"Student {label} (KD {kd.loss})"
    plain_jobs = {}
    if SASREC_ROW in plain_arms:  # the slowest first
        plain_jobs[SASREC_ROW] = submit(plain_arms.pop(SASREC_ROW), no_kd, SASREC_ROW)
    content = plan.content if student.kind == "sequential" else None
    kd_jobs = submit(student, kd, kd_name, content)
    plain_jobs |= {name: submit(config, no_kd, name) for name, config in plain_arms.items()}
    if run is None:
        done = run_jobs(jobs, split, teacher, workers=workers)
    else:
        done = run(jobs, split, teacher)
    plain = {name: [done[i] for i in ids] for name, ids in plain_jobs.items()}
    distilled = [done[i] for i in kd_jobs]
    if SASREC_ROW in plain:
        rows.append(student_row(plain[SASREC_ROW], SASREC_ROW, role="baseline"))
    rows.append(teacher_row(split, teacher))
    rows += [student_row(runs, name) for name, runs in plain.items() if name != SASREC_ROW]
    kd_row = student_row(distilled, kd_name)
    rows.append(kd_row)
    twin = next((r for r in rows if r.model in (f"Student {label} (no KD)", SASREC_ROW)), None)
    plain_rows = [r for r in rows if r.role != "teacher" and not r.distilled]
    best_plain = max(plain_rows, key=lambda r: r.metric("ndcg@10").mean)
    tests = {"kd_vs_best_plain": paired_test(kd_row, best_plain)}
    if twin is not None:
        tests = {"kd_vs_no_kd": paired_test(kd_row, twin), **tests}
    report = build_report(
        dataset=dataset.ref,
        split=split,
        seeds=plan.seeds,
        rows=rows,
        settings={
            "teacher_fingerprint": soft.fingerprint,
            "regime": plan.regime,
            "student": student.model_dump(),
            "sasrec": plan.sasrec.model_dump(),
            "distill": kd.model_dump(),
            "content": None if content is None else content.model_dump(),
            "loop": plan.loop.model_dump(),
        },
        tests=tests,
    )
    best = max(distilled, key=lambda r: r.valid["ndcg@10"])
    sasrec_run = plain[SASREC_ROW][0] if SASREC_ROW in plain else None
    return Comparison(report, rows, best, sasrec_run, {**plain, kd_name: distilled})
