"""Warm start: a nightly student that starts from the published model's weights.

The previous bundle's sequential student is mapped onto tonight's catalog by item id: a known
item keeps its trained ID embedding, a new one starts at zero when the student projects text (its
vector is then its text projection alone) and at SASRec's N(0, 0.02) otherwise. Every other weight
(positions, blocks, the text projection) is copied. A bundle whose student has another shape gives
None, and training starts as configured without it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.student.config import StudentConfig

log = logging.getLogger(__name__)
SHAPE = ("kind", "dim", "n_layers", "n_heads", "history_len", "text_projection")


@dataclass(frozen=True, eq=False)
class PreviousStudent:
    """What a warm start reads of the published model (`distill.serving.warm_start` reads it from
    the bundle, so this stage never opens a bundle itself)."""

    version: str  # the published version
    config: dict  # its StudentConfig, as the bundle records it
    net: dict[str, Tensor]  # its SASRec weights (`net.` prefix removed)
    item_ids: tuple[str, ...]  # its catalog, in its item_idx order


@dataclass(frozen=True, eq=False)
class WarmStart:
    """Where a warm-started student comes from: the published student and tonight's item ids."""

    previous: PreviousStudent
    item_ids: tuple[str, ...]  # tonight's catalog, in item_idx order

    @property
    def version(self) -> str:
        """Part of the student's checkpoint key."""
        return self.previous.version


def previous_state(start: WarmStart, config: StudentConfig, seed: int) -> dict[str, Tensor] | None:
    """The SASRec state (`net.` prefix removed) to start from, or None when shapes differ."""
    previous = start.previous.config
    differ = [k for k in SHAPE if previous.get(k) != getattr(config, k)]
    if differ:
        log.warning(
            "warm start skipped: %s's student differs in %s; starting as configured",
            start.version,
            ", ".join(differ),
        )
        return None
    net = dict(start.previous.net)
    row = {item: r for r, item in enumerate(start.previous.item_ids)}
    old = net["item_emb.weight"]  # (I_old, D)
    table = _new_rows(len(start.item_ids), old.shape[1], config.text_projection, seed)
    pairs = [(r, row[item]) for r, item in enumerate(start.item_ids) if item in row]
    if pairs:
        new_rows, old_rows = zip(*pairs, strict=True)
        table[list(new_rows)] = old[list(old_rows)]
    net["item_emb.weight"] = table
    log.info(
        "warm start from %s: %d of %d items carried over", start.version, len(pairs),
        len(start.item_ids),
    )  # fmt: skip
    return net


def _new_rows(n: int, dim: int, text_projection: bool, seed: int) -> Tensor:
    if text_projection:
        return torch.zeros(n, dim)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator) * 0.02
