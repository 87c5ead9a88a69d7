from __future__ import annotations

import pytest

from pipelines.config import RunConfig
from pipelines.regime import ScalingConfig, choose


def test_a_small_catalog_keeps_the_full_recipe():
    config = RunConfig()
    same, choice = config.for_catalog(1_682)
    assert same is config and choice.regime == "full" and choice.filled == {}
    assert "1,682 items <= scaling.sampled_above_items" in choice.line()


def test_a_large_catalog_gets_the_sampled_recipe_everywhere():
    config, choice = RunConfig().for_catalog(13_412)
    assert choice.regime == "sampled"
    assert config.teacher.pairs == "candidates"
    assert config.teacher.position_last == 10
    assert config.teacher.adapt.sampled_negatives == 1_024
    assert config.student.sampled_negatives == config.sasrec.sampled_negatives == 1_024
    assert config.split.eval_users == 2_000
    for loop in (config.train, config.teacher.adapt.loop):
        assert (loop.schedule, loop.warmup_epochs, loop.max_epochs) == ("cosine", 1, 10)
    assert config.teacher.adapt.loop.patience == 15  # what the regime does not set is kept
    assert choice.filled["teacher.position_last"] == 10
    assert "regime: sampled (13,412 items > scaling.sampled_above_items)" in choice.line()


def test_settings_the_config_writes_win_over_the_regime():
    config = RunConfig.model_validate(
        {
            "train": {"max_epochs": 30},
            "student": {"sampled_negatives": 256},
            "split": {"eval_users": 500},
            "teacher": {"adapt": {"loop": {"batch_size": 128}}},
        }
    )
    filled, choice = config.for_catalog(50_000)
    assert filled.train.max_epochs == 30 and filled.train.schedule == "cosine"
    assert filled.student.sampled_negatives == 256
    assert filled.sasrec.sampled_negatives == 1_024
    assert filled.split.eval_users == 500
    assert filled.teacher.adapt.loop.batch_size == 128
    assert filled.teacher.adapt.loop.max_epochs == 10
    assert (
        "train.max_epochs" not in choice.filled and "student.sampled_negatives" not in choice.filled
    )


def test_the_regime_can_be_pinned_either_way():
    assert choose(ScalingConfig(regime="full"), 10**6)[0] == "full"
    assert choose(ScalingConfig(regime="sampled"), 100)[0] == "sampled"
    assert choose(ScalingConfig(sampled_above_items=100), 101)[0] == "sampled"
    config, choice = RunConfig(scaling=ScalingConfig(regime="full")).for_catalog(10**6)
    assert choice.regime == "full" and config.student.sampled_negatives == 0


def test_a_filled_config_that_does_not_hold_together_is_refused():
    """The regime's settings are checked as if written by hand: a two-tower student distilling
    with the rank loss cannot take a sampled softmax."""
    config = RunConfig.model_validate(
        {"student": {"kind": "two_tower"}, "distill": {"loss": "rank", "init": "random"}}
    )
    with pytest.raises(ValueError, match="sampled_negatives distils with loss kl or mse"):
        config.for_catalog(50_000)


def test_the_default_yaml_writing_every_default_still_gets_the_sampled_recipe():
    """configs/default.yaml writes every key at its default: that is not pinning them."""
    from pathlib import Path

    from pipelines.config import load_config

    path = Path(__file__).resolve().parents[2] / "configs" / "default.yaml"
    config, choice = load_config(path).for_catalog(13_412)
    assert choice.regime == "sampled"
    assert config.teacher.pairs == "candidates" and config.train.schedule == "cosine"
    assert config.student.sampled_negatives == 1_024


def test_a_run_configs_own_default_loop_counts_as_default():
    """`fill` compares a nested setting with the enclosing default object (a run's `train` loop
    may default to a recipe of its own), not with the nested class's defaults."""
    from pydantic import BaseModel

    from distill.training.loop import LoopConfig
    from pipelines.regime import fill

    class Run(BaseModel):
        train: LoopConfig = LoopConfig(schedule="cosine", max_epochs=40, lr=2e-3)

    recipe = {"train.max_epochs": 10, "train.warmup_epochs": 1}
    filled, applied = fill(Run(), recipe)
    assert filled.train.max_epochs == 10 and applied == recipe  # type: ignore[attr-defined]
    written = Run(train=LoopConfig(schedule="cosine", max_epochs=77, lr=2e-3))
    filled, applied = fill(written, recipe)
    assert filled.train.max_epochs == 77 and applied == {"train.warmup_epochs": 1}  # type: ignore[attr-defined]
