"""Two-tower student: user = ID embedding + mean of recent train item vectors; item = ID embedding
+ optional linear projection of the teacher's frozen item embedding."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from distill.nn.layers import ItemTower
from distill.student.config import StudentConfig
from distill.training.losses import NEG, multi_positive_ce


class TwoTower(nn.Module):
    text_emb: Tensor  # (I, T) frozen LM item embeddings, or (0,) without a text projection

    def __init__(
        self, n_users: int, n_items: int, config: StudentConfig, text_emb: np.ndarray | None
    ) -> None:
        super().__init__()
        self.n_items, self.n_negatives = n_items, config.sampled_negatives
        text_dim = 0 if text_emb is None else text_emb.shape[1]
        # with a sampled softmax (large catalogs) a step touches only the rows it looks up:
        # sparse gradients, trained by SparseAdam (distill.training.loop.make_optimizer)
        sparse = config.sampled_negatives > 0
        self.items = ItemTower(n_items, config.dim, text_dim=text_dim, hidden=0, sparse=sparse)
        self.users = nn.Embedding(n_users, config.dim, sparse=sparse)
        nn.init.normal_(self.users.weight, std=0.05)
        self.drop = nn.Dropout(config.dropout)
        emb = torch.zeros(0) if text_emb is None else torch.as_tensor(text_emb, dtype=torch.float32)
        self.register_buffer("text_emb", emb, persistent=False)

    def item_vectors(self) -> Tensor:
        return self.items(self.text_emb if self.text_emb.numel() else None)  # (I, D)

    def item_vectors_at(self, ids: Tensor) -> Tensor:
        """(N, D) vectors of the items `ids` only."""
        return self.items.at(ids, self.text_emb if self.text_emb.numel() else None)

    def user_vectors(self, users: Tensor, hist: Tensor, item_vecs: Tensor) -> Tensor:
        """users (B,), hist (B, L) padded with n_items -> (B, D)."""
        return self.drop(self.users(users) + self.history_vectors(hist, item_vecs))

    def text_vectors(self, text_emb: Tensor) -> Tensor | None:
        """(N, D) vectors of items known by text alone (no trained ID embedding); None without
        a text projection."""
        return None if self.items.text is None else self.items.text(text_emb)

    def history_vectors(self, hist: Tensor, item_vecs: Tensor) -> Tensor:
        """(B, D) from the histories alone: the mean of their item vectors (anonymous users get
        no ID term, the mean of a trained user embedding's prior). `hist` indexes `item_vecs`
        (every item, or the rows a step looked up); the padding is always n_items."""
        keep = (hist != self.n_items).unsqueeze(-1).float()  # (B, L, 1)
        vecs = item_vecs[hist.clamp(max=len(item_vecs) - 1)] * keep
        return vecs.sum(1) / keep.sum(1).clamp(min=1.0)  # (B, D)

    @property
    def reads_text(self) -> bool:
        return self.items.text is not None

    def ce_loss(
        self, positives: Tensor, item_vecs: Tensor, user_vecs: Tensor, unknown: Tensor | None = None
    ) -> Tensor:
        """CE over each user's train items, full softmax (the sampled one, for
        `sampled_negatives`, runs on ragged lists in `distill.student.fit.sampled_user_loss`);
        `unknown` (I,) items are left out of it."""
        logits = user_vecs @ item_vecs.T
        if unknown is not None:
            logits = logits.masked_fill(unknown, NEG)
        return multi_positive_ce(logits, positives)
