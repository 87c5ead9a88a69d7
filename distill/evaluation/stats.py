"""Statistics of the harness: the per-user paired test every comparison of two models uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from distill.evaluation.harness import EvalResult


def paired(
    treated: Sequence[EvalResult],
    control: Sequence[EvalResult],
    *,
    names: tuple[str, str],
    metric: str = "ndcg@10",
) -> dict:
    """Paired t-test on per-user metric values pooled across seeds (same users, same seeds). A
    deterministic control with one result (a classic baseline) is paired with every seed."""
    a = np.concatenate([r.per_user[metric] for r in treated])
    if len(control) == 1:
        control = list(control) * len(treated)
    b = np.concatenate([r.per_user[metric] for r in control])
    base = b.mean()
    p_value = float(stats.ttest_rel(a, b).pvalue) if np.any(a != b) else 1.0
    return {
        "metric": metric,
        "relative_gain": float(a.mean() / base - 1) if base else 0.0,
        "p_value": p_value,
        "n_pairs": int(len(a)),
        "treated": names[0],
        "control": names[1],
    }
