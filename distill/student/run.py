"""One student trained and evaluated: `StudentRun` (the model, its results and how it serves
cold items), `fit_and_evaluate`, and its content path (`content_tower`, `place_items`)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill.evaluation.harness import EvalResult, Scorer, evaluate
from distill.nn.sampled import SampledSoftmax
from distill.student.build import StudentNet
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
from distill.teacher.soft_labels import SoftLabels
from distill.training.loop import LoopConfig, TrainResult
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
        tower = content_tower(
            model, split, text_emb, content, loop.seed, soft_labels, config.sampled_negatives
        )
    placement = place_items(model, split, text_emb, tower, scale=content.scale if content else 1.0)
    return evaluated(model, config, kd, loop.seed, result, split, placement, tower)


def content_tower(
    model: SequentialStudent,
    split: Split,
    text_emb: np.ndarray,
    content: ContentConfig,
    seed: int,
    soft_labels: SoftLabels | None = None,
    sampled_negatives: int = 0,
) -> ContentTower:
    """A content tower for a trained sequential student (`distill.student.content`); with
    `sampled_negatives` (the student's), on the same log-Q corrected sampled softmax."""
    data = UserData(split, model.net.max_len)
    sampler = None
    if sampled_negatives:
        sampler = SampledSoftmax.of_targets(data.targets, split.n_items, sampled_negatives)
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
        sampler=sampler,
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
