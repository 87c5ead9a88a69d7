"""Shared building blocks: right-aligned history matrices and the two-tower item tower."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn


def left_padded(seqs: Sequence[np.ndarray], length: int, pad: int) -> np.ndarray:
    """(U, length) int64: the last `length` items of each sequence, left-padded with `pad`."""
    out = np.full((len(seqs), length), pad, dtype=np.int64)
    for row, seq in enumerate(seqs):
        tail = seq[-length:]
        if len(tail):
            out[row, length - len(tail) :] = tail
    return out


class ItemTower(nn.Module):
    """Item vectors = ID embedding (optional) + MLP of frozen text embeddings (optional)."""

    def __init__(
        self,
        n_items: int,
        dim: int,
        *,
        text_dim: int = 0,
        id_embeddings: bool = True,
        hidden: int | None = None,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        if not id_embeddings and text_dim == 0:
            raise ValueError("an item tower needs ID embeddings, text embeddings or both")
        self.n_items = n_items
        # sparse: gradients only for the rows looked up (`at`), for a SparseAdam over big tables
        self.ids = nn.Embedding(n_items, dim, sparse=sparse) if id_embeddings else None
        if self.ids is not None:
            nn.init.normal_(self.ids.weight, std=0.05)
        self.text: nn.Module | None = None
        if text_dim and hidden == 0:  # hidden=0: a plain linear projection
            self.text = nn.Linear(text_dim, dim)
        elif text_dim:
            hidden = hidden or 2 * dim
            self.text = nn.Sequential(
                nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, dim)
            )

    def forward(self, text_emb: Tensor | None = None) -> Tensor:
        """All item vectors (I, D). `text_emb` (I, T) is required when the tower has a text part."""
        parts = [] if self.ids is None else [self.ids.weight]
        if self.text is not None:
            if text_emb is None:
                raise ValueError("this item tower needs text embeddings")
            parts.append(self.text(text_emb))
        return _sum(parts)  # (I, D)

    def at(self, ids: Tensor, text_emb: Tensor | None = None) -> Tensor:
        """(N, D) vectors of items `ids` only (a lookup: sparse gradients with `sparse`)."""
        parts = [] if self.ids is None else [self.ids(ids)]
        if self.text is not None:
            if text_emb is None:
                raise ValueError("this item tower needs text embeddings")
            parts.append(self.text(text_emb[ids]))
        return _sum(parts)


def _sum(parts: list[Tensor]) -> Tensor:
    """The sum of the ID and text parts (the constructor guarantees at least one)."""
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out
