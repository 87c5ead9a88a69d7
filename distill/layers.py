"""Shared neural building blocks: item towers and a SASRec-style causal history encoder."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses import sample_columns


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
    ) -> None:
        super().__init__()
        if not id_embeddings and text_dim == 0:
            raise ValueError("an item tower needs ID embeddings, text embeddings or both")
        self.n_items = n_items
        self.ids = nn.Embedding(n_items, dim) if id_embeddings else None
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
        out = 0
        if self.ids is not None:
            out = self.ids.weight
        if self.text is not None:
            if text_emb is None:
                raise ValueError("this item tower needs text embeddings")
            out = out + self.text(text_emb)
        return out  # (I, D)


class HistoryEncoder(nn.Module):
    """Causal self-attention over a user's history of item vectors (SASRec-style).

    Output at position t summarises items 0..t; the last position is the user vector.
    """

    def __init__(self, dim: int, max_len: int, n_layers: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.pos = nn.Embedding(max_len, dim)
        layer = nn.TransformerEncoderLayer(
            dim,
            n_heads,
            dim_feedforward=2 * dim,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        causal = torch.triu(torch.ones(max_len, max_len, dtype=torch.bool), diagonal=1)
        self.register_buffer("causal", causal, persistent=False)

    def forward(self, seq_vecs: Tensor, pad: Tensor) -> Tensor:
        """seq_vecs (B, L, D), pad (B, L) True where padded -> (B, L, D)."""
        batch, length = pad.shape
        x = seq_vecs + self.pos.weight[-length:]  # right-aligned positions: last = newest
        x = self.drop(x).masked_fill(pad.unsqueeze(-1), 0.0)
        # causal and key-padding mask in one; every query may attend to itself, so a padded
        # position never sees an all-masked row (which would give NaN)
        blocked = self.causal[:length, :length].unsqueeze(0) | pad.unsqueeze(1)  # (B, L, L)
        blocked = blocked & ~torch.eye(length, dtype=torch.bool, device=pad.device)
        mask = blocked.repeat_interleave(self.n_heads, dim=0)  # (B * heads, L, L)
        x = self.blocks(x, mask=mask)
        x = x.masked_fill(pad.unsqueeze(-1), 0.0)
        return self.norm(x)


class SequentialRecommender(nn.Module):
    """Item tower + causal history encoder; score(user, item) = <user vector, item vector>."""

    def __init__(
        self,
        n_items: int,
        dim: int,
        max_len: int,
        n_layers: int,
        n_heads: int,
        dropout: float,
        *,
        text_dim: int = 0,
        id_embeddings: bool = True,
        text_hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.n_items, self.max_len = n_items, max_len
        self.items = ItemTower(
            n_items, dim, text_dim=text_dim, id_embeddings=id_embeddings, hidden=text_hidden
        )
        self.history = HistoryEncoder(dim, max_len, n_layers, n_heads, dropout)

    def item_vectors(self, text_emb: Tensor | None = None) -> Tensor:
        return self.items(text_emb)  # (I, D)

    def sequence_states(self, hist: Tensor, item_vecs: Tensor) -> Tensor:
        """hist (B, L) item indices, padded with n_items -> per-position user states (B, L, D)."""
        pad = hist == self.n_items
        padded_vecs = torch.cat([item_vecs, item_vecs.new_zeros(1, item_vecs.shape[1])])
        return self.history(padded_vecs[hist], pad)

    def next_item_loss(self, seqs: Tensor, item_vecs: Tensor, n_negatives: int = 0) -> Tensor:
        """CE of every next item given the items before it. seqs (B, L+1).

        n_negatives = 0: full softmax over all items; > 0: sampled softmax over the batch's targets
        plus that many uniform negatives (`losses.sample_columns`).
        """
        inp, tgt = seqs[:, :-1], seqs[:, 1:]
        states = self.sequence_states(inp, item_vecs)  # (B, L, D)
        keep = (tgt != self.n_items) & (inp != self.n_items)
        states, tgt = states[keep], tgt[keep]
        if n_negatives == 0:
            return F.cross_entropy(states @ item_vecs.T, tgt)  # logits (N, I)
        cols = sample_columns(tgt, self.n_items, n_negatives)
        return F.cross_entropy(states @ item_vecs[cols].T, torch.searchsorted(cols, tgt))

    def user_vectors(self, hist: Tensor, item_vecs: Tensor) -> Tensor:
        return self.sequence_states(hist, item_vecs)[:, -1]  # (B, D)
