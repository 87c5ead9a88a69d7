"""Build a student from its config (the one place that knows every student kind)."""

from __future__ import annotations

import numpy as np
from torch import nn

from distill.student.config import StudentConfig
from distill.student.sequential import SequentialStudent
from distill.student.two_tower import TwoTower

StudentNet = SequentialStudent | TwoTower  # every student kind; they share the serving methods


def build_student(
    config: StudentConfig, n_users: int, n_items: int, text_emb: np.ndarray | None
) -> StudentNet:
    """The student for `config`; `text_emb` (I, T) are the teacher's frozen item embeddings."""
    use_text = config.text_projection and text_emb is not None
    if config.kind == "two_tower":
        return TwoTower(n_users, n_items, config, text_emb if use_text else None)
    return SequentialStudent(n_items, config, text_emb if use_text else None)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
