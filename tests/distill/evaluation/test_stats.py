"""The comparison every claim uses: users the unit, seeds averaged per user, a CI of the gain."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from distill.evaluation.harness import EvalResult
from distill.evaluation.stats import Comparison, bootstrap_gain_ci, paired

USERS, SEEDS = 300, 5


def _results(values: np.ndarray) -> list[EvalResult]:
    """(seeds, users) per-user NDCG@10 -> one EvalResult per seed."""
    users = np.arange(values.shape[1])
    return [EvalResult({"ndcg@10": float(v.mean())}, {"ndcg@10": v}, users) for v in values]


def _two_models(effect: float, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Per-user values where each user's *difference* varies a lot between users and a little
    between seeds: the case where counting a user once per seed overstates the evidence."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.05, 0.3, USERS)
    user_effect = rng.normal(0, 0.1, USERS)  # how much this user gains or loses ...
    user_effect -= user_effect.mean()  # ... around `effect` exactly
    control = base + rng.normal(0, 0.01, (SEEDS, USERS))
    treated = base + effect + user_effect + rng.normal(0, 0.01, (SEEDS, USERS))
    return treated, control


def test_seeds_are_not_users_pooling_would_call_this_significant():
    treated, control = _two_models(effect=0.006)  # 1.0 standard errors of a user mean
    pooled = stats.ttest_rel(treated.ravel(), control.ravel()).pvalue  # the old test
    assert pooled < 0.05  # users counted once per seed: 1,500 "pairs"
    out = paired(_results(treated), _results(control), names=("kd", "plain"))
    assert out.n_pairs == USERS
    assert out.p_value > 0.05 and not out.significant
    assert out.ci[0] < 0 < out.ci[1]


def test_a_true_effect_is_detected_with_a_ci_that_excludes_zero():
    treated, control = _two_models(effect=0.05)
    out = paired(_results(treated), _results(control), names=("kd", "plain"))
    assert out.significant and out.ci[0] > 0 and out.p_value < 1e-3
    assert out.ci[0] < out.relative_gain < out.ci[1]
    assert out.seeds.favour_treated == SEEDS and len(out.seeds.treated) == SEEDS
    assert out.seeds.diff_mean == pytest.approx((treated.mean(1) - control.mean(1)).mean())
    # a model that is worse: the interval lies below 0
    worse = paired(_results(control), _results(treated), names=("plain", "kd"))
    assert worse.significant and worse.ci[1] < 0 and worse.seeds.favour_treated == 0


def test_the_bootstrap_interval_by_hand_and_reproducible():
    a, b = np.array([0.2, 0.4, 0.6, 0.8]), np.array([0.1, 0.2, 0.3, 0.4])
    lo, hi = bootstrap_gain_ci(a, b)
    assert (lo, hi) == pytest.approx((1.0, 1.0))  # every user doubles: every resample is +100 %
    assert bootstrap_gain_ci(a, b + 0.05) == bootstrap_gain_ci(a, b + 0.05)


def test_results_on_different_users_are_refused():
    one = EvalResult({}, {"ndcg@10": np.zeros(3)}, np.arange(3))
    other = EvalResult({}, {"ndcg@10": np.zeros(3)}, np.arange(1, 4))
    with pytest.raises(ValueError, match="different users"):
        paired([one], [other], names=("a", "b"))


def test_comparison_round_trips_and_reads_a_legacy_pooled_test():
    treated, control = _two_models(effect=0.05)
    out = paired(_results(treated), _results(control), names=("kd", "plain"))
    assert Comparison.from_json(out.as_json()) == out
    legacy = {
        "metric": "ndcg@10",
        "relative_gain": 0.1,
        "p_value": 0.01,
        "n_pairs": 4715,
        "treated": "kd",
        "control": "plain",
    }
    old = Comparison.from_json(legacy)
    assert "legacy" in old.test and not old.significant  # no interval: never called significant
