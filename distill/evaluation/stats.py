"""The one comparison every claim of two models uses: users are the unit, seeds are respected.

1. Each user's metric is averaged over the seeds of each model (a deterministic control with one
   result, a classic baseline, is the same at every seed), so a user counts once, never once per
   seed: `n_pairs` is the number of users.
2. A Wilcoxon signed-rank test of those per-user differences (paired over users; users whose two
   values are equal carry no sign and are dropped, as the test defines) gives `p_value`.
3. A paired bootstrap over users (resampling users with replacement, both models together) gives
   the 95 % confidence interval `ci` of the relative gain mean(treated) / mean(control) - 1.
   A difference is `significant` when that interval excludes 0.
4. The seed-level view beside it: each seed's mean of both models, the per-seed paired
   differences (seed s of the treated model against seed s of the control) as mean +- std, and
   how many seeds favour the treated model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from distill.evaluation.harness import EvalResult

N_BOOTSTRAP = 2000  # resamples of the users for the confidence interval
CONFIDENCE = 0.95
_BOOTSTRAP_SEED = 0  # the interval is reproducible: the same inputs give the same interval
_CHUNK_CELLS = 1 << 22  # resamples x users drawn at once (bounded memory at any user count)


@dataclass(frozen=True)
class SeedView:
    """The comparison seed by seed: each seed's mean metric of both models and their paired
    differences (the control's single result repeats when it is deterministic)."""

    treated: list[float]
    control: list[float]
    diff_mean: float
    diff_std: float  # 0 with one seed
    favour_treated: int  # seeds where the treated model's mean is above the control's


@dataclass(frozen=True)
class Comparison:
    """Two models on the same users: the seed-aware paired comparison (module docstring)."""

    metric: str
    treated: str
    control: str
    treated_mean: float  # over users of the per-user seed means
    control_mean: float
    relative_gain: float  # treated_mean / control_mean - 1
    ci: tuple[float, float]  # 95 % paired-bootstrap interval of relative_gain (users resampled)
    p_value: float  # Wilcoxon signed-rank over users of the per-user seed-mean differences
    n_pairs: int  # users (never users x seeds)
    seeds: SeedView
    test: str = "wilcoxon signed-rank over users (seed means); paired bootstrap CI"

    @property
    def significant(self) -> bool:
        """The confidence interval of the gain excludes 0."""
        return self.ci[0] > 0 or self.ci[1] < 0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "ci": list(self.ci), "significant": self.significant}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Comparison:
        """Read back `as_json`; a report written before this module (a pooled paired t-test:
        no interval, no seed view) reads with NaN interval and an empty seed view."""
        nan = float("nan")
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["ci"] = tuple(fields.get("ci", (nan, nan)))
        seeds = fields.get("seeds") or {"treated": [], "control": [], "diff_mean": nan}
        fields["seeds"] = SeedView(**{"diff_std": nan, "favour_treated": 0, **seeds})
        fields.setdefault("treated_mean", nan)
        fields.setdefault("control_mean", nan)
        if "ci" not in data:
            fields["test"] = "paired t-test on per-user values pooled over seeds (legacy)"
        return cls(**fields)

    def line(self) -> str:
        """One line for report.md, the terminal and the Prefect artifact."""
        lo, hi = self.ci
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{self.relative_gain:+.1%} (95% CI {lo:+.1%} … {hi:+.1%}, {verdict}), "
            f"Wilcoxon p = {self.p_value:.3g}, {self.n_pairs} users; seeds: "
            f"{self.seeds.favour_treated}/{len(self.seeds.treated)} favour {self.treated}"
        )


def per_user_means(results: Sequence[EvalResult], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """(users, each user's metric averaged over the results/seeds); every result must be on the
    same users in the same order."""
    users = results[0].users
    for r in results[1:]:
        if not np.array_equal(r.users, users):
            raise ValueError("results to average per user are on different users")
    return users, np.mean([r.per_user[metric] for r in results], axis=0)


def paired(
    treated: Sequence[EvalResult],
    control: Sequence[EvalResult],
    *,
    names: tuple[str, str],
    metric: str = "ndcg@10",
    n_bootstrap: int = N_BOOTSTRAP,
) -> Comparison:
    """Compare `treated` against `control` on the same users (module docstring). A control with
    one result (deterministic) is paired with every seed of the treated model."""
    if not treated or not control:
        raise ValueError("paired needs at least one result of each model")
    users, a = per_user_means(treated, metric)
    control_users, b = per_user_means(control, metric)
    if not np.array_equal(users, control_users):
        raise ValueError(f"{names[0]} and {names[1]} were evaluated on different users")
    diff = a - b
    p_value = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    base = float(b.mean())
    return Comparison(
        metric=metric,
        treated=names[0],
        control=names[1],
        treated_mean=float(a.mean()),
        control_mean=base,
        relative_gain=float(a.mean() / base - 1) if base else 0.0,
        ci=bootstrap_gain_ci(a, b, n_bootstrap=n_bootstrap),
        p_value=p_value,
        n_pairs=len(users),
        seeds=_seed_view(treated, control, metric),
    )


def bootstrap_gain_ci(
    a: np.ndarray, b: np.ndarray, *, n_bootstrap: int = N_BOOTSTRAP
) -> tuple[float, float]:
    """95 % percentile interval of mean(a) / mean(b) - 1 over users resampled with replacement
    (a[i] and b[i] are one user's values: they are drawn together)."""
    rng = np.random.default_rng(_BOOTSTRAP_SEED)
    n = len(a)
    gains: list[np.ndarray] = []
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, n_bootstrap, step):
        idx = rng.integers(0, n, size=(min(step, n_bootstrap - start), n))
        sa, sb = a[idx].mean(1), b[idx].mean(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gains.append(np.where(sb > 0, sa / sb - 1, 0.0))
    values = np.concatenate(gains)
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def _seed_view(
    treated: Sequence[EvalResult], control: Sequence[EvalResult], metric: str
) -> SeedView:
    t = [float(r.per_user[metric].mean()) for r in treated]
    c = [float(r.per_user[metric].mean()) for r in control]
    paired_c = c if len(c) == len(t) else [float(np.mean(c))] * len(t)
    diffs = np.subtract(t, paired_c)
    return SeedView(
        treated=t,
        control=c,
        diff_mean=float(diffs.mean()),
        diff_std=float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
        favour_treated=int((diffs > 0).sum()),
    )
