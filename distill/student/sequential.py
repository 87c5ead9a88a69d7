"""Sequential student (SASRec-style): 1-2 causal self-attention layers over the last 50 items;
the output at the last position is the user vector."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from distill.layers import SequentialRecommender
from distill.student import StudentConfig


class SequentialStudent(nn.Module):
    def __init__(self, n_items: int, config: StudentConfig, text_emb: np.ndarray | None) -> None:
        super().__init__()
        self.n_items, self.n_negatives = n_items, config.sampled_negatives
        text_dim = 0 if text_emb is None else text_emb.shape[1]
        self.net = SequentialRecommender(
            n_items,
            config.dim,
            config.history_len,
            config.n_layers,
            config.n_heads,
            config.dropout,
            text_dim=text_dim,
            text_hidden=0,
        )
        emb = torch.zeros(0) if text_emb is None else torch.as_tensor(text_emb, dtype=torch.float32)
        self.register_buffer("text_emb", emb, persistent=False)

    def item_vectors(self) -> Tensor:
        return self.net.item_vectors(self.text_emb if self.text_emb.numel() else None)  # (I, D)

    def user_vectors(self, users: Tensor, hist: Tensor, item_vecs: Tensor) -> Tensor:
        return self.net.user_vectors(hist, item_vecs)  # (B, D); users unused

    def ce_loss(
        self,
        users: Tensor,
        hist: Tensor,
        seqs: Tensor,
        positives: Tensor,
        item_vecs: Tensor,
        user_vecs: Tensor,
    ) -> Tensor:
        """CE of every next train item given the ones before it. seqs (B, L+1)."""
        return self.net.next_item_loss(seqs, item_vecs, self.n_negatives)
