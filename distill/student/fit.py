"""Train a student on ground truth plus the teacher's cached soft labels: L = L_c + alpha * L_k.

Batches are drawn shard by shard (shards in a seeded random order, users shuffled inside each), so
only one block of soft labels needs to be in memory. The undistilled baseline (alpha = 0) uses the
very same batches and budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distill import losses
from distill.evaluate import evaluate
from distill.layers import left_padded
from distill.soft_labels import SoftLabels
from distill.student import StudentConfig, build_student
from distill.train import LoopConfig, TrainResult, fit
from storage.split import Split


class DistillConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float = Field(1.0, ge=0)  # weight of the distillation term; 0 = no distillation
    loss: Literal["kl", "mse", "rank"] = "kl"
    temperature: float = Field(1.0, gt=0)  # kl: softmax temperature T (loss scaled by T^2)
    rank_k: int = Field(20, ge=1)  # rank: teacher top-K items distilled
    rank_lambda: float = Field(5.0, gt=0)  # rank: weight decay over teacher rank
    mask_seen: bool = True  # drop the user's train items from both distributions


class UserData:
    """Per-user tensors every student batch needs, built once from the split."""

    def __init__(self, split: Split, history_len: int) -> None:
        seqs = split.train_sequences()
        self.n_items = split.n_items
        self.hist = torch.as_tensor(left_padded(seqs, history_len, split.n_items))
        self.seqs = torch.as_tensor(left_padded(seqs, history_len + 1, split.n_items))
        self.train = split.train
        self.active = np.flatnonzero(np.diff(self.train.indptr) > 0)

    def positives(self, users: np.ndarray) -> Tensor:
        return torch.from_numpy(self.train[users].toarray())


def student_scorer(model: nn.Module, data: UserData):
    model.eval()
    with torch.no_grad():
        item_vecs = model.item_vectors()

    def scores(users: np.ndarray) -> Tensor:
        with torch.no_grad():
            u = torch.as_tensor(users)
            return model.user_vectors(u, data.hist[u], item_vecs) @ item_vecs.T

    return scores


def _batches(data: UserData, shards: list[tuple[str, int, int]], batch_size: int):
    def batches(epoch: int) -> Iterator[tuple[str, int, np.ndarray]]:
        for s in torch.randperm(len(shards)).tolist():
            key, start, end = shards[s]
            users = data.active[(data.active >= start) & (data.active < end)]
            users = users[torch.randperm(len(users)).numpy()]
            for i in range(0, len(users), batch_size):
                yield key, start, users[i : i + batch_size]

    return batches


def kd_term(config: DistillConfig, student: Tensor, teacher: Tensor, seen: Tensor) -> Tensor:
    mask = torch.isnan(teacher)
    if config.mask_seen:
        mask = mask | (seen > 0)
    teacher = torch.nan_to_num(teacher, nan=0.0)
    if config.loss == "kl":
        return losses.kd_kl(student, teacher, config.temperature, mask)
    if config.loss == "mse":
        return losses.kd_mse(student, teacher, mask)
    return losses.kd_rank(student, teacher, config.rank_k, config.rank_lambda, mask)


def train_student(
    split: Split,
    config: StudentConfig,
    kd: DistillConfig,
    loop: LoopConfig,
    *,
    soft_labels: SoftLabels | None,
    text_emb: np.ndarray | None,
    checkpoint_dir: Path | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Fit one student; early stopping on validation NDCG@10. kd.alpha == 0: no teacher used."""
    torch.manual_seed(loop.seed)
    model = build_student(config, split.n_users, split.n_items, text_emb)
    data = UserData(split, config.history_len)
    use_kd = kd.alpha > 0 and soft_labels is not None
    shards = soft_labels.shards if soft_labels is not None else [("all", 0, split.n_users)]

    def loss_fn(m: nn.Module, batch: tuple[str, int, np.ndarray]) -> tuple[Tensor, dict]:
        key, start, users = batch
        u = torch.as_tensor(users)
        positives = data.positives(users)
        item_vecs = m.item_vectors()
        user_vecs = m.user_vectors(u, data.hist[u], item_vecs)
        l_c = m.ce_loss(u, data.hist[u], data.seqs[u], positives, item_vecs, user_vecs)
        parts = {"l_c": l_c.item()}
        if not use_kd:
            return l_c, parts
        teacher = soft_labels.block(key)[users - start]
        l_k = kd_term(kd, user_vecs @ item_vecs.T, teacher, positives)
        parts["l_k"] = l_k.item()
        return l_c + kd.alpha * l_k, parts

    def validate(m: nn.Module) -> float:
        return evaluate(student_scorer(m, data), split, fold="valid").primary

    run_key = f"{config.model_dump_json()}{kd.model_dump_json()}{use_kd}" + (
        soft_labels.fingerprint if use_kd else ""
    )
    result = fit(
        model,
        batches=_batches(data, shards, loop.batch_size),
        loss_fn=loss_fn,
        validate=validate,
        config=loop,
        checkpoint_dir=checkpoint_dir,
        desc=f"student {config.kind} {'kd' if use_kd else 'no-kd'}",
        run_key=run_key,
    )
    return model, result
