"""The stopping-rule replay stops where the training loop itself stops, and keeps its epoch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.patience import replay
from distill.training.loop import LoopConfig, fit

CURVE = [0.10, 0.12, 0.11, 0.13, 0.125, 0.12, 0.119, 0.135, 0.13, 0.128, 0.127, 0.126, 0.12]


@pytest.mark.parametrize(("patience", "smoothing"), [(1, 0.0), (2, 0.0), (3, 0.0), (2, 0.5)])
def test_replay_matches_the_loop(patience, smoothing):
    model = nn.Linear(2, 1)
    scores = iter(CURVE)
    result = fit(
        model,
        batches=lambda epoch: iter([torch.zeros(1, dtype=torch.long)]),
        loss_fn=lambda m, idx: (m(torch.ones(1, 2)).sum() * 0, {"loss": 0.0}),
        validate=lambda m: next(scores),
        config=LoopConfig(patience=patience, smoothing=smoothing, max_epochs=len(CURVE)),
    )
    ran = len(result.history)
    if ran == len(CURVE):  # stopped by max_epochs: the replay cannot tell
        assert replay(CURVE, patience, smoothing) in (None, (ran, result.best_epoch))
    else:
        assert replay(CURVE, patience, smoothing) == (ran, result.best_epoch)
        assert replay(CURVE[:ran], patience, smoothing) == (ran, result.best_epoch)
