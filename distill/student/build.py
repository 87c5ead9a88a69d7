"""Build a student from its config (the one place that knows every student kind)."""

from __future__ import annotations

import warnings
from typing import cast

import numpy as np
import torch
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


def int8_tower(model: StudentNet) -> StudentNet:
    """A copy of the student whose linear layers (attention, feed-forward, text projection) run
    in int8: dynamic quantisation, int8 weights with activations quantised per batch. Its
    embeddings stay float32 (the served item vectors come from the bundle, not from it)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch deprecates its quantized tensors for torchao's
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=False)
    return cast(StudentNet, quantized.eval())


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
