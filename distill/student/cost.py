"""Serving cost as each model really serves: seconds per user through its own path."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from distill import index as faiss_index
from distill.evaluation.report.model import ServingCost
from distill.student.fit import UserData
from distill.student.run import StudentRun
from distill.teacher.cache import TeacherCache
from storage.split import Split

log = logging.getLogger(__name__)


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
