"""A sampled softmax over the catalog with the log-Q correction, for catalogs where a full
softmax (every training position x every item) is the cost of a step.

The columns of a step are its own targets (each row's positive is every other row's negative:
in-batch negatives, drawn in proportion to how often an item is a training target) plus
`n_negatives` items drawn uniformly (which reach the tail the batch never holds), de-duplicated.
Such a sample over-represents popular items, and a softmax over it is biased towards demoting
them; the log-Q correction (Bengio & Senecal 2008; Yi et al. 2019 for in-batch negatives; Yang
et al. 2020 for the mixed in-batch + uniform sample) subtracts from every column's logit the log
of the probability that the column is in the step's (de-duplicated) sample,

    log q_j = log(1 - (1 - pop_j)^B (1 - 1/I)^N),

with B the step's targets, pop_j item j's share of the training targets and N the uniform draws
(TensorFlow's candidate samplers give the same "expected count" for unique samples), so the
sampled softmax estimates the full one. (The expected number of draws, B pop_j + N/I, is the
correction for a sample kept with its repeats; on a de-duplicated one it over-corrects the
popular items, which the tests show.) Columns the caller adds for other reasons (the teacher's
top-K of a KD term) take the same correction.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


class SampledSoftmax:
    """Draws a step's columns and their log-Q correction; built once per training from the
    training targets' item counts. Uses the global torch RNG (the loop seeds it per epoch)."""

    def __init__(self, target_counts: np.ndarray | Tensor, n_negatives: int) -> None:
        counts = torch.as_tensor(target_counts, dtype=torch.float64)
        if counts.ndim != 1 or not len(counts):
            raise ValueError("target_counts must be a non-empty 1-D array (one count per item)")
        if n_negatives < 1:
            raise ValueError(f"n_negatives must be at least 1, got {n_negatives}")
        self.n_items = len(counts)
        self.n_negatives = n_negatives
        self.pop = counts / counts.sum().clamp(min=1)  # (I,) share of the training targets

    @classmethod
    def of_targets(cls, targets: Tensor | np.ndarray, n_items: int, n_negatives: int):
        """From training targets (any shape; -100 = padding)."""
        flat = np.asarray(targets).reshape(-1)
        counts = np.bincount(flat[flat >= 0], minlength=n_items)
        return cls(counts, n_negatives)

    def columns(self, targets: Tensor, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(columns, log_q): the sorted unique item columns of a step whose targets are `targets`
        (N,) — those, `extra` (any shape) and the uniform draw — and (C,) the log expected
        draws of each column, to subtract from its logit."""
        uniform = torch.randint(self.n_items, (self.n_negatives,), device=targets.device)
        parts = [targets.reshape(-1), uniform]
        if extra is not None:
            parts.append(extra.reshape(-1))
        columns = torch.unique(torch.cat(parts))  # sorted
        return columns, self.log_inclusion(len(targets))[columns]

    def log_inclusion(self, n_targets: int) -> Tensor:
        """(I,) log of the probability that each item is among a step's columns: drawn by one
        of `n_targets` popularity draws or one of the uniform ones."""
        log_miss = n_targets * torch.log1p(-self.pop.clamp(max=1 - 1e-12))
        log_miss = log_miss + self.n_negatives * math.log1p(-1 / self.n_items)
        return torch.log(-torch.expm1(log_miss)).to(torch.float32)

    def logits(
        self, states: Tensor, item_vecs: Tensor, targets: Tensor, extra: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(logits (N, C) corrected, the targets as column indices (N,), columns (C,)):
        `states` (N, D) against the step's columns of `item_vecs` (I, D)."""
        columns, log_q = self.columns(targets, extra)
        logits = states @ item_vecs[columns].T - log_q
        return logits, torch.searchsorted(columns, targets), columns
