"""The student stage as plain functions: train students, evaluate every model, build the bundle.

The Prefect student flow and the CLI call these; nothing here knows about Prefect.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill import index as faiss_index
from distill.evaluation.baselines import run_baselines
from distill.evaluation.harness import EvalResult, Scorer, evaluate
from distill.evaluation.report.build import build_report, paired_test
from distill.evaluation.report.model import ModelRow, Report, ServingCost
from distill.student.build import StudentNet, n_params
from distill.student.config import StudentConfig
from distill.student.content import (
    ContentConfig,
    ContentTower,
    Placement,
    cold_items,
    fit_content,
)
from distill.student.fit import DistillConfig, UserData, student_scorer, train_student
from distill.student.sequential import SequentialStudent
from distill.student.warm_start import WarmStart, previous_state
from distill.teacher.cache import TeacherCache
from distill.teacher.soft_labels import SoftLabels
from distill.training.loop import LoopConfig, TrainResult, config_hash
from distill.training.parallel import InBackground, map_in_processes
from storage.datasets import Dataset
from storage.split import Split

log = logging.getLogger(__name__)


@dataclass
class StudentRun:
    model: StudentNet
    config: StudentConfig
    kd: DistillConfig
    seed: int
    train: TrainResult
    test: EvalResult
    valid: dict[str, float]
    users_per_second: float
    placement: Placement  # the served item vectors (cold items from text when it can)
    content: ContentTower | None = None  # its content path, when it has a tower

    def scorer(self, split: Split, scale: float | None = None) -> Scorer:
        """(users, fold) -> scores with the served vectors (`scale`: of the cold items')."""
        vecs = self.placement.served(scale)
        return student_scorer(self.model, UserData(split, self.config.history_len), vecs)


def fit_and_evaluate(
    split: Split,
    config: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    *,
    soft_labels: SoftLabels | None,
    text_emb: np.ndarray | None,
    init_state: dict[str, Tensor] | None = None,
    checkpoint_dir: Path | None = None,
    content: ContentConfig | None = None,
) -> StudentRun:
    """Train one student (resuming from `checkpoint_dir`), give it a content tower when
    `content` is set (on `text_emb`, the LM item embeddings), evaluate it as it is served."""
    model, result = train_student(
        split,
        config,
        kd,
        loop,
        soft_labels=soft_labels,
        text_emb=text_emb,
        init_state=init_state,
        checkpoint_dir=checkpoint_dir,
    )
    tower = None
    if content is not None and text_emb is not None:
        if not isinstance(model, SequentialStudent):
            raise ValueError("a content tower is fitted on a sequential student only")
        tower = content_tower(model, split, text_emb, content, loop.seed, soft_labels)
    placement = place_items(model, split, text_emb, tower, scale=content.scale if content else 1.0)
    return evaluated(model, config, kd, loop.seed, result, split, placement, tower)


def content_tower(
    model: SequentialStudent,
    split: Split,
    text_emb: np.ndarray,
    content: ContentConfig,
    seed: int,
    soft_labels: SoftLabels | None = None,
) -> ContentTower:
    """A content tower for a trained sequential student (`distill.student.content`)."""
    data = UserData(split, model.net.max_len)
    t0 = time.perf_counter()
    tower = fit_content(
        model,
        data.inputs,
        data.targets,
        (data.owner, data.position),
        text_emb,
        content,
        seed=seed,
        soft_labels=soft_labels,
        unknown=data.cold,
    )
    log.info("content tower fitted in %.1f s", time.perf_counter() - t0)
    return tower


def evaluated(
    model: StudentNet,
    config: StudentConfig,
    kd: DistillConfig,
    seed: int,
    result: TrainResult,
    split: Split,
    placement: Placement,
    tower: ContentTower | None = None,
) -> StudentRun:
    """A trained student's run: validation and test metrics as it is served, and its speed."""
    data = UserData(split, config.history_len)
    served = placement.served()
    valid = evaluate(student_scorer(model, data, served), split, fold="valid").metrics
    t0 = time.perf_counter()
    test = evaluate(student_scorer(model, data, served), split)
    speed = len(test.users) / max(time.perf_counter() - t0, 1e-9)
    return StudentRun(model, config, kd, seed, result, test, valid, speed, placement, tower)


def place_items(
    model: StudentNet,
    split: Split,
    text_emb: np.ndarray | None,
    tower: ContentTower | None,
    *,
    scale: float = 1.0,
) -> Placement:
    """The student's served item vectors: items with no train interaction come from text, through
    its content tower, else through its own text projection (its ID row left out), else they
    keep their untrained vectors."""
    model.eval()
    with torch.no_grad():
        item_vecs = model.item_vectors().detach()
        cold = torch.as_tensor(cold_items(np.asarray(split.train.sum(axis=0)).ravel()))
        text_vecs = None
        if text_emb is not None:
            emb = torch.as_tensor(text_emb, dtype=torch.float32)
            text_vecs = tower(emb) if tower is not None else model.text_vectors(emb)
    return Placement(item_vecs, cold, None if text_vecs is None else text_vecs.detach(), scale)


def teacher_row(split: Split, cache: TeacherCache) -> ModelRow:
    """The teacher as a recommender: its head's user vectors from each fold's input (standard
    protocol) against its item vectors; params = LM + head, train time = adaptation."""
    cost = cache.cost()
    scorer = cache.scorer()
    t0 = time.perf_counter()
    result = evaluate(scorer, split)
    speed = len(result.users) / max(time.perf_counter() - t0, 1e-9)
    return ModelRow("Teacher", "teacher", False, [result], cost.params, [cost.adapt_seconds], speed)


def baseline_rows(split: Split) -> list[ModelRow]:
    return [
        ModelRow(
            b.name, "baseline", False, [b.result], b.params, [b.train_seconds], b.users_per_second
        )
        for b in run_baselines(split)
    ]


def student_row(runs: list[StudentRun], name: str, role: str = "student") -> ModelRow:
    return ModelRow(
        name,
        role,
        runs[0].kd.alpha > 0,
        [r.test for r in runs],
        n_params(runs[0].model),
        [r.train.seconds for r in runs],
        float(np.mean([r.users_per_second for r in runs])),
        history=[r.train.history for r in runs],
        valid=[r.valid["ndcg@10"] for r in runs],
    )


def checkpoint_dir(
    root: Path,
    dataset: Dataset,
    split: Split,
    teacher_fingerprint: str,
    student: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    seed: int,
    start: str = "",
) -> Path:
    """Checkpoints keyed by everything that shapes training: a re-run resumes or reuses them. A
    student that reads nothing of the teacher's is keyed without it, so it is trained once for
    every teacher (and can train before the teacher exists). `start`: the version a warm-started
    student starts from."""
    needs_teacher = kd.uses_teacher or student.text_projection
    parts = [
        dataset.version,
        split.name,
        teacher_fingerprint if needs_teacher else "",
        student.model_dump(),
        kd.model_dump(),
        loop.model_dump(),
        seed,
    ]
    if split.eval_users is not None:  # validation on a sample picks other epochs
        parts.append(f"eval_users={split.eval_users}")
    if student.text_projection:  # trained with untouched items left out of its softmax
        parts.append("unknown-items-masked")
    key = config_hash(*parts, start) if start else config_hash(*parts)
    return Path(root) / key[:20]


@dataclass(frozen=True)
class TrainJob:
    """One student to train: an arm of the report at one seed."""

    config: StudentConfig
    kd: DistillConfig
    loop: LoopConfig  # its seed is the job's seed
    checkpoint_dir: Path | None
    warm: WarmStart | None = None  # kd.init "previous": the published model to start from
    name: str = ""  # its report row
    content: ContentConfig | None = None  # fit a content tower after training (sequential)

    @property
    def label(self) -> str:
        return f"{self.name or self.config.kind} seed {self.loop.seed}"


def run_job(job: TrainJob, split: Split, cache: TeacherCache | None) -> StudentRun:
    """One job; it reads the teacher cache only for what it uses (soft labels, a head to start
    from, LM item embeddings), so a plain ID-only job runs with `cache` None."""
    soft_labels = init = text_emb = None
    if job.kd.uses_teacher or job.config.text_projection or job.content is not None:
        if cache is None:
            raise ValueError("this student reads the teacher: pass its cache")
        wants_labels = job.kd.alpha > 0 or (job.content is not None and job.content.alpha > 0)
        soft_labels = SoftLabels(cache) if wants_labels else None
        text_emb = cache.vectors("items", "embedding")
        if job.kd.init == "previous" and job.warm is not None:
            init = previous_state(job.warm, job.config, job.loop.seed)
        if job.kd.init in ("teacher", "previous") and init is None:
            fold = not job.config.text_projection
            init = cache.head_state(job.loop.seed, fold_text=fold)
    return fit_and_evaluate(
        split,
        job.config,
        job.kd,
        job.loop,
        soft_labels=soft_labels,
        text_emb=text_emb,
        init_state=init,
        checkpoint_dir=job.checkpoint_dir,
        content=job.content,
    )


def run_jobs(
    jobs: list[TrainJob], split: Split, cache: TeacherCache | None, *, workers: int
) -> list[StudentRun]:
    """Train every job, in order here (workers <= 1) or in `workers` processes side by side."""
    return map_in_processes(run_job, [(job, split, cache) for job in jobs], workers=workers)


JobRunner = Callable[[list[TrainJob], Split, TeacherCache | None], list[StudentRun]]


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


def plain_kd(kd: DistillConfig) -> DistillConfig:
    """The undistilled arms' settings: no soft labels and no start from the teacher."""
    return kd.model_copy(update={"alpha": 0.0, "init": "random", "lr": None, "patience": None})


def train_job(
    dataset: Dataset,
    split: Split,
    teacher_fingerprint: str,
    config: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    seed: int,
    checkpoint_root: Path | None,
    warm: WarmStart | None = None,
    name: str = "",
) -> TrainJob:
    warm = warm if kd.init == "previous" else None
    ckpt = None
    if checkpoint_root is not None:
        start = warm.version if warm else ""
        ckpt = checkpoint_dir(
            checkpoint_root, dataset, split, teacher_fingerprint, config, kd, loop, seed, start
        )
    return TrainJob(config, kd, loop.model_copy(update={"seed": seed}), ckpt, warm, name)


def start_sasrec_ahead(
    dataset: Dataset,
    split: Split,
    sasrec: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    *,
    seed: int,
    checkpoint_root: Path,
) -> InBackground:
    """Start training the plain SASRec row (one seed, no teacher) in a spawned one-thread
    process. The flow runs it beside the teacher stage; `quality` then finds its checkpoint done
    (and must not start before it is: `result()` first)."""
    job = train_job(dataset, split, "", sasrec, plain_kd(kd), loop, seed, checkpoint_root)
    return InBackground(run_job, (job, split, None))


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


def _per_user_seconds(
    user_vectors: Callable[[Tensor], Tensor], item_vecs: np.ndarray, users: Tensor, repeats: int
) -> float:
    """Best-of-`repeats` seconds per user for a user vector plus one FAISS top-10 search."""
    index, _ = faiss_index.build_index(np.ascontiguousarray(item_vecs))
    timings = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            vecs = user_vectors(users).numpy()
        index.search(np.ascontiguousarray(vecs), 10)
        timings.append((time.perf_counter() - t0) / len(users))
    return min(timings)


def _student_seconds(run: StudentRun, split: Split, users: Tensor, repeats: int) -> float:
    data = UserData(split, run.config.history_len)
    item_vecs = run.placement.served()
    return _per_user_seconds(
        lambda u: run.model.user_vectors(u, data.hist["test"][u], item_vecs),
        item_vecs.detach().numpy(),
        users,
        repeats,
    )


def serving_cost(
    teacher: TeacherCache,
    student: StudentRun,
    sasrec: StudentRun | None,
    split: Split,
    *,
    n_users: int = 256,
    repeats: int = 3,
) -> ServingCost:
    """Per-request serving cost of each model as it would really serve, with its caches, on the
    same machine and users: a user vector from the test input plus one FAISS top-10 search. The
    teacher serves from its head over the cached LM item embeddings (it never re-encodes texts
    to serve). Its one-time nightly cost (LM pass over new texts, adaptation, soft labels) is
    reported separately, from the teacher cache's report."""
    users = torch.arange(min(n_users, split.n_users))
    seconds = {"student": _student_seconds(student, split, users, repeats)}
    if sasrec is not None:  # a night trains no plain SASRec: there is nothing to compare with
        seconds["sasrec"] = _student_seconds(sasrec, split, users, repeats)
    if teacher.plan.adapter_path is not None:
        user_vectors, item_vecs = teacher.head_user_vectors(split, "test")
        seconds["teacher"] = _per_user_seconds(user_vectors, item_vecs, users, repeats)
    info = teacher.report()
    return ServingCost(
        seconds_per_user=seconds,
        student_vs_sasrec=seconds["student"] / seconds["sasrec"] if "sasrec" in seconds else None,
        teacher_vs_student=seconds["teacher"] / seconds["student"]
        if "teacher" in seconds
        else None,
        teacher_nightly_seconds={
            "lm_encode": float(info.get("encode_seconds") or 0.0),
            "adaptation": float(info.get("adapt_seconds") or 0.0),
        },
        users=len(users),
    )
