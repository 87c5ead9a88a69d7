from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.training.loop import LoopConfig, fit


def test_fields_added_to_keyed_configs_leave_old_keys_unchanged_at_their_defaults():
    """Checkpoint keys and teacher fingerprints hash these dumps: a field added later must not
    change them while it holds its default, and must when it is set."""
    assert LoopConfig().model_dump_json() == (
        '{"lr":0.001,"weight_decay":0.0,"batch_size":64,"max_epochs":200,"patience":20,'
        '"smoothing":0.0,"seed":0}'
    )
    assert "schedule" in LoopConfig(schedule="cosine").model_dump()
    assert "warmup_epochs" in LoopConfig(warmup_epochs=2).model_dump()
    assert "sampled_negatives" not in AdaptConfig().fingerprint()
    assert AdaptConfig(sampled_negatives=64).fingerprint()["sampled_negatives"] == 64
    assert "position_last" not in TeacherConfig().model_dump()
    loop = LoopConfig(schedule="cosine", warmup_epochs=1)
    assert LoopConfig.model_validate_json(loop.model_dump_json()) == loop


def test_the_learning_rate_warms_up_then_decays_to_zero_at_max_epochs():
    config = LoopConfig(lr=0.01, schedule="cosine", warmup_epochs=2, max_epochs=10)
    rates = [config.lr_at(e) for e in range(10)]
    assert rates[:3] == pytest.approx([0.01 / 3, 0.02 / 3, 0.01])
    assert rates[2:] == sorted(rates[2:], reverse=True)
    assert rates[6] == pytest.approx(0.005)  # half way through the decay
    assert rates[9] < 0.001
    assert LoopConfig(lr=0.01).lr_at(50) == 0.01  # constant by default
    assert LoopConfig(lr=0.01, warmup_epochs=1).lr_at(0) == pytest.approx(0.005)


def test_fit_trains_each_epoch_at_the_scheduled_rate(monkeypatch):
    torch.manual_seed(0)
    config = LoopConfig(lr=0.1, schedule="cosine", warmup_epochs=1, max_epochs=5, patience=10)
    rates: list[float] = []
    step = torch.optim.AdamW.step

    def recorded(self, *args, **kwargs):  # the rate each step is taken at
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recorded)
    fit(
        nn.Linear(2, 1),
        batches=lambda epoch: [torch.ones(3, 2)],  # one step an epoch
        loss_fn=lambda m, batch: (m(batch).pow(2).mean(), {}),
        validate=lambda m: 0.0,
        config=config,
    )
    assert rates == pytest.approx([config.lr_at(e) for e in range(5)])
    assert rates[0] < rates[1] > rates[4]
