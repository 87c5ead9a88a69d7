"""Training jobs: one (arm, seed) each, checkpointed under a content key, run side by side in
worker processes (`run_jobs`) or ahead of the rest (`start_sasrec_ahead`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from distill.student.config import StudentConfig
from distill.student.content import (
    ContentConfig,
)
from distill.student.fit import DistillConfig
from distill.student.run import StudentRun, fit_and_evaluate
from distill.student.warm_start import WarmStart, previous_state
from distill.teacher.cache import TeacherCache
from distill.teacher.soft_labels import SoftLabels
from distill.training.loop import LoopConfig, config_hash
from distill.training.parallel import InBackground, map_in_processes
from storage.datasets import Dataset
from storage.split import Split

log = logging.getLogger(__name__)


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
