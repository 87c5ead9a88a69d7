"""Sequential student: SASRec (`distill.nn.sasrec`), trained on every next item of the train
histories; the state after the newest item is the user vector. With `text_projection` its item
vectors add a projection of the teacher's frozen LM item embeddings; without it, it is exactly the
plain SASRec of the report, so distillation is compared at the same model and serving cost."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from distill.nn.sasrec import SASRec
from distill.student.config import StudentConfig


class SequentialStudent(nn.Module):
    text_emb: Tensor  # (I, T) frozen LM item embeddings, or (0,) without a text projection

    def __init__(self, n_items: int, config: StudentConfig, text_emb: np.ndarray | None) -> None:
        super().__init__()
        self.n_items = n_items
        self.id_dropout = config.id_dropout
        text_dim = 0 if text_emb is None else text_emb.shape[1]
        self.net = SASRec.from_config(n_items, config, text_dim=text_dim)
        emb = torch.zeros(0) if text_emb is None else torch.as_tensor(text_emb, dtype=torch.float32)
        self.register_buffer("text_emb", emb, persistent=False)

    @property
    def reads_text(self) -> bool:
        return self.net.text is not None

    def item_vectors(self) -> Tensor:
        """(I, D); in training with `id_dropout`, a fresh draw of dropped ID embeddings."""
        keep = None
        if self.training and self.id_dropout:
            keep = (torch.rand(self.n_items, 1) >= self.id_dropout).to(torch.float32)
        text = self.text_emb if self.text_emb.numel() else None
        return self.net.item_vectors(text, keep)  # (I, D)

    def user_vectors(self, users: Tensor, hist: Tensor, item_vecs: Tensor) -> Tensor:
        return self.net.history_vectors(hist, item_vecs)  # (B, D); users unused

    def text_vectors(self, text_emb: Tensor) -> Tensor | None:
        """(N, D) vectors of items known by text alone (no trained ID embedding); None without
        a text projection."""
        return None if self.net.text is None else self.net.text(text_emb)

    def history_vectors(self, hist: Tensor, item_vecs: Tensor) -> Tensor:
        """(B, D) from the histories alone: a SASRec user is its history."""
        return self.net.history_vectors(hist, item_vecs)

    def position_states(self, inputs: Tensor, targets: Tensor, item_vecs: Tensor) -> Tensor:
        """(N, D) user states at every non-padding slot of training windows (B, L)."""
        return self.net.states(inputs, item_vecs)[targets != -100]
