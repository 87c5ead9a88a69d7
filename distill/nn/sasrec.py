"""SASRec (Kang & McAuley, 2018) as the standard recipe trains it: the model every other model here
is compared with, and the architecture of the teacher head and the sequential student.

The building blocks follow the widely used public implementation (RecBole's SASRec):
post-norm transformer blocks, LayerNorm + dropout on the summed item and position embeddings,
left-aligned positions (position 0 = the oldest item of the window), weights drawn from
N(0, 0.02), inner width 4x the model width, and a full-softmax cross-entropy over all items with
the item embeddings as the output layer (or, for large catalogs, a log-Q corrected sampled
softmax: `distill.nn.sampled`). Training targets are every position of every user's
history (`windows`), not only the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.nn.sampled import SampledSoftmax


def windows(seqs: Sequence[np.ndarray], length: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-item training windows over whole histories, left-aligned and right-padded.

    Each user's sequence s is cut into windows of `length` inputs; input s[j] predicts s[j+1].
    Windows are taken from the newest end backwards, so the newest targets always have a full
    window of context. Returns (inputs, targets), both (W, length) int64; padding is `pad` in
    inputs and -100 (ignored by cross-entropy) in targets.
    """
    inputs, targets = [], []
    for seq in seqs:
        n = len(seq) - 1  # number of (input, target) pairs
        end = n
        while end > 0:
            start = max(0, end - length)
            row_in = np.full(length, pad, dtype=np.int64)
            row_tg = np.full(length, -100, dtype=np.int64)
            row_in[: end - start] = seq[start:end]
            row_tg[: end - start] = seq[start + 1 : end + 1]
            inputs.append(row_in)
            targets.append(row_tg)
            end = start
    if not inputs:
        return np.empty((0, length), np.int64), np.empty((0, length), np.int64)
    return np.stack(inputs), np.stack(targets)


def window_targets(seqs: Sequence[np.ndarray], length: int) -> tuple[np.ndarray, np.ndarray]:
    """For every (window, slot) of `windows(seqs, length, pad)`: the user and the position of the
    target in that user's sequence (1-based: position t = "after reading items 0..t-1"); -1 where
    the slot is padding. Both (W, length) int64, rows in the order `windows` emits them."""
    users, positions = [], []
    for user, seq in enumerate(seqs):
        end = len(seq) - 1
        while end > 0:
            start = max(0, end - length)
            row = np.full(length, -1, dtype=np.int64)
            row[: end - start] = np.arange(start + 1, end + 1)
            users.append(np.where(row >= 0, user, -1))
            positions.append(row)
            end = start
    if not users:
        return np.empty((0, length), np.int64), np.empty((0, length), np.int64)
    return np.stack(users), np.stack(positions)


def align_left(hist: Tensor, pad: int) -> tuple[Tensor, Tensor]:
    """Right-aligned (left-padded) histories (B, L) -> left-aligned (B, L) and lengths (B,)."""
    length = hist.shape[1]
    lengths = (hist != pad).sum(1)  # (B,)
    src = torch.arange(length, device=hist.device) + (length - lengths).unsqueeze(1)  # (B, L)
    out = hist.gather(1, src.clamp(max=length - 1))
    return out.masked_fill(src >= length, pad), lengths


class Dropout(nn.Module):
    """Inverted dropout, as nn.Dropout, with the mask drawn as uniform >= p. On CPU torch's
    bernoulli_ (what nn.Dropout draws with) was a quarter of a SASRec training step; this mask is
    about 2x cheaper. On accelerators nn.Dropout's fused kernel is used."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        keep = torch.rand_like(x) >= self.p
        return x * keep.to(x.dtype).mul_(1.0 / (1.0 - self.p))


class Block(nn.Module):
    """Post-norm transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, dim: int, n_heads: int, inner: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-12)
        self.ff = nn.Sequential(nn.Linear(dim, inner), nn.GELU(), nn.Linear(inner, dim))
        self.norm2 = nn.LayerNorm(dim, eps=1e-12)
        self.drop = Dropout(dropout)
        self.attn_drop = Dropout(attn_dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, L, D), mask (B, 1, L, L) True where attention is allowed -> (B, L, D)."""
        b, length, dim = x.shape
        q, k, v = (
            t.transpose(1, 2)  # (B, H, L, D/H)
            for t in self.qkv(x).view(b, length, 3, self.n_heads, dim // self.n_heads).unbind(2)
        )
        if self.training and self.attn_drop.p > 0:  # dropout on the attention probabilities
            logits = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
            probs = logits.masked_fill(~mask, float("-inf")).softmax(-1)
            attn = self.attn_drop(probs) @ v
        else:
            attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = self.norm1(x + self.drop(self.out(attn.transpose(1, 2).reshape(b, length, dim))))
        return self.norm2(x + self.drop(self.ff(x)))


class SASRecShape(Protocol):
    """What sizes a SASRec: both the teacher's AdaptConfig and the StudentConfig have it."""

    dim: int
    history_len: int
    n_layers: int
    n_heads: int
    dropout: float


class SASRec(nn.Module):
    """Item vectors = ID embedding (+ optional projection of frozen text embeddings); the user
    state at position t reads items 0..t of a left-aligned window. score = <state, item vector>."""

    def __init__(
        self,
        n_items: int,
        *,
        dim: int = 64,
        max_len: int = 50,
        n_layers: int = 2,
        n_heads: int = 2,
        inner: int | None = None,
        dropout: float = 0.5,
        attn_dropout: float = 0.5,
        text_dim: int = 0,
        id_embeddings: bool = True,
    ) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        if not id_embeddings and not text_dim:
            raise ValueError("SASRec needs item ID embeddings, text embeddings or both")
        self.n_items, self.max_len = n_items, max_len
        self.item_emb = nn.Embedding(n_items, dim) if id_embeddings else None
        self.text = nn.Linear(text_dim, dim) if text_dim else None
        self.pos_emb = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=1e-12)
        self.drop = Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(dim, n_heads, inner or 4 * dim, dropout, attn_dropout) for _ in range(n_layers)
        )
        self.apply(self._init)

    @classmethod
    def from_config(
        cls, n_items: int, shape: SASRecShape, *, text_dim: int = 0, id_embeddings: bool = True
    ) -> SASRec:
        """A SASRec sized by a config; one dropout rate for embeddings, attention and blocks."""
        return cls(
            n_items,
            dim=shape.dim,
            max_len=shape.history_len,
            n_layers=shape.n_layers,
            n_heads=shape.n_heads,
            dropout=shape.dropout,
            attn_dropout=shape.dropout,
            text_dim=text_dim,
            id_embeddings=id_embeddings,
        )

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def item_vectors(self, text_emb: Tensor | None = None, id_keep: Tensor | None = None) -> Tensor:
        """(I, D): ID embeddings, plus the projected text embeddings (I, T) when configured.
        `id_keep` (I, 1) scales each item's ID embedding (0 drops it: ID dropout)."""
        if self.text is None:
            assert self.item_emb is not None  # the constructor keeps IDs when there is no text
            return self.item_emb.weight
        if text_emb is None:
            raise ValueError("this SASRec projects text embeddings: pass text_emb")
        projected = self.text(text_emb)
        if self.item_emb is None:
            return projected
        ids = self.item_emb.weight if id_keep is None else self.item_emb.weight * id_keep
        return ids + projected

    def states(self, seq: Tensor, item_vecs: Tensor) -> Tensor:
        """seq (B, L) left-aligned item indices padded with n_items -> (B, L, D) user states."""
        length = seq.shape[1]
        padded = torch.cat([item_vecs, item_vecs.new_zeros(1, item_vecs.shape[1])])  # (I + 1, D)
        x = self.drop(self.norm(padded[seq] + self.pos_emb.weight[:length]))
        keep = seq != self.n_items  # (B, L)
        causal = torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
        mask = (causal & keep[:, None, :]) | torch.eye(length, dtype=torch.bool, device=seq.device)
        mask = mask.unsqueeze(1)  # (B, 1, L, L): a padded query still sees itself (no NaN rows)
        for block in self.blocks:
            x = block(x, mask)
        return x

    def history_vectors(self, hist: Tensor, item_vecs: Tensor) -> Tensor:
        """hist (B, L) right-aligned histories (left-padded with n_items) -> (B, D): the state
        after the newest item. The window is left-aligned first, as in training."""
        seq, lengths = align_left(hist[:, -self.max_len :], self.n_items)
        states = self.states(seq, item_vecs)
        return states[torch.arange(len(seq)), (lengths - 1).clamp(min=0)]

    def loss(
        self,
        inputs: Tensor,
        targets: Tensor,
        item_vecs: Tensor,
        sampler: SampledSoftmax | None = None,
    ) -> Tensor:
        """CE of every target given the inputs before it; inputs/targets (B, L). Over every item
        (SASRec's recipe), or with `sampler` over the step's sampled columns, log-Q corrected
        (`distill.nn.sampled`: large catalogs)."""
        keep = targets != -100
        states = self.states(inputs, item_vecs)[keep]  # (N, D)
        if sampler is None:
            return F.cross_entropy(states @ item_vecs.T, targets[keep])
        logits, columns_of_targets, _ = sampler.logits(states, item_vecs, targets[keep])
        return F.cross_entropy(logits, columns_of_targets)
