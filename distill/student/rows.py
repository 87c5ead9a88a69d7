"""The report rows of the student stage: the plain baselines, the teacher, a student over seeds."""

from __future__ import annotations

import logging
import time

import numpy as np

from distill.evaluation.baselines import run_baselines
from distill.evaluation.harness import evaluate
from distill.evaluation.report.model import ModelRow
from distill.student.build import n_params
from distill.student.run import StudentRun
from distill.teacher.cache import TeacherCache
from storage.split import Split

log = logging.getLogger(__name__)


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
