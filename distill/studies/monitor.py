"""Health checks of the published model, for the `monitor` flow (plain Python, no Prefect).

- data freshness: how long since a new dataset version arrived (the nightly inbox stalling), and
  optionally the age of the newest interaction (off by default: replayed or public data is old);
- the current model's validation NDCG@10 against the version published before it;
- drift: overlap@10 between the teacher's and the current student's top-10 on a fixed user sample
  (a student that stopped following its teacher, or a teacher cache that no longer matches);
- serving: the 5xx rate from a running `kdrec serve`'s /metrics, when a URL is given.

Each check returns a `Check`; `ok` None means it could not run (said in `detail`), not a failure.
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from distill.serving.recommend import Recommender
from storage.atomic import read_json
from storage.datasets import load_dataset
from storage.registry import Registry
from storage.workdir import WorkDir

DAY = 86_400.0
NOT_SERVED = "not made current"  # the gate field of versions stored without serving them


class MonitorConfig(BaseModel):
    """Alert thresholds; a crossed one fails the monitor flow with a one-line reason."""

    model_config = ConfigDict(extra="forbid")

    max_dataset_age_days: float = Field(2.0, gt=0)  # since the newest dataset version was made
    max_interaction_age_days: float | None = Field(None, gt=0)  # newest event; None = not checked
    max_validation_drop: float = Field(0.02, ge=0, lt=1)  # vs the previous version, relative
    min_teacher_overlap: float = Field(0.2, ge=0, le=1)  # mean overlap@10, teacher vs student
    max_error_rate: float = Field(0.01, ge=0, le=1)  # 5xx / requests from /metrics
    metrics_url: str | None = None  # e.g. http://127.0.0.1:8000/metrics; None = not checked
    metrics_token: str | None = None  # bearer token when the service requires one
    sample_users: int = Field(200, ge=1)  # users for the drift check (a fixed sample)


@dataclass(frozen=True)
class Check:
    name: str
    value: str
    threshold: str
    ok: bool | None  # None: could not run
    detail: str

    @property
    def status(self) -> str:
        return {True: "ok", False: "ALERT", None: "skipped"}[self.ok]


def freshness(work_dir: Path, dataset: str, config: MonitorConfig, now: float) -> list[Check]:
    try:
        latest = load_dataset(work_dir, dataset)
    except FileNotFoundError as exc:
        return [Check("data freshness", "-", "-", None, str(exc))]
    meta = read_json(latest.path / "dataset.json")
    made = datetime.fromisoformat(meta["created_at"]).timestamp()
    age = (now - made) / DAY
    checks = [
        Check(
            "dataset version age",
            f"{age:.2f} d",
            f"≤ {config.max_dataset_age_days} d",
            age <= config.max_dataset_age_days,
            f"newest version {meta['version']} of {dataset} made {meta['created_at']}",
        )
    ]
    if config.max_interaction_age_days is not None:
        newest = float(latest.interactions().get_column("timestamp").to_numpy().max())
        event_age = (now - newest) / DAY
        checks.append(
            Check(
                "newest interaction age",
                f"{event_age:.2f} d",
                f"≤ {config.max_interaction_age_days} d",
                event_age <= config.max_interaction_age_days,
                f"newest interaction at {datetime.fromtimestamp(newest, UTC).isoformat()}",
            )
        )
    return checks


def validation_trend(registry: Registry, config: MonitorConfig) -> Check:
    current = registry.current_version()
    older = [  # versions that were served: backfills are stored "not made current"
        v
        for v in registry.versions()
        if current and v < current and registry.bundle(v).manifest.get("gate") != NOT_SERVED
    ]
    if current is None or not older:
        return Check("validation vs previous", "-", "-", None, "no previous served version")
    versus = registry.bundle(current).manifest.get("versus_champion")
    if versus is not None:  # measured at publish time: both models on the same fold
        now, before = versus["challenger"]["ndcg@10"], versus["champion"]["ndcg@10"]
        detail = (
            f"validation NDCG@10 of {current} vs {versus['champion_version']} on the same "
            f"validation fold ({current}'s), p = {versus['test']['p_value']:.3g}"
        )
    else:
        now = registry.bundle(current).manifest.get("validation", {}).get("ndcg@10")
        before = registry.bundle(older[-1]).manifest.get("validation", {}).get("ndcg@10")
        if now is None or before is None:
            return Check("validation vs previous", "-", "-", None, "a version has no validation")
        detail = f"validation NDCG@10 of {current} vs {older[-1]}"
    drop = (before - now) / before if before else 0.0
    return Check(
        "validation vs previous",
        f"{now:.4f} vs {before:.4f} ({-drop:+.1%})",
        f"drop ≤ {config.max_validation_drop:.0%}",
        drop <= config.max_validation_drop,
        detail,
    )


def teacher_overlap(work_dir: Path, model: str, config: MonitorConfig) -> Check:
    from distill.teacher.cache import TeacherCache

    name = "teacher vs student overlap@10"
    try:
        rec = Recommender.in_work_dir(work_dir, model)
    except (FileNotFoundError, ValueError) as exc:
        return Check(name, "-", "-", None, str(exc))
    fingerprint = rec.manifest.get("teacher_fingerprint")
    if not fingerprint:
        return Check(name, "-", "-", None, "the bundle records no teacher fingerprint")
    cache = TeacherCache.of(work_dir, fingerprint)
    if not cache.is_prepared():
        return Check(name, "-", "-", None, f"teacher cache {fingerprint} not on disk")
    teacher_users = cache.vectors("users", "test_vector")
    teacher_items = cache.vectors("items")
    if teacher_users.shape[0] != rec.user_vecs.shape[0] or teacher_items.shape[0] != rec.n_items:
        return Check(name, "-", "-", None, "teacher cache and model cover different users/items")
    rng = np.random.default_rng(0)  # the same users every hour
    users = rng.choice(len(rec.user_vecs), size=min(config.sample_users, len(rec.user_vecs)))
    overlaps = []
    for u in users:
        seen = list(rec.seen[u])
        t = teacher_users[u] @ teacher_items.T
        s = rec.user_vecs[u] @ rec.encoder.item_vecs.numpy().T
        t[seen], s[seen] = -np.inf, -np.inf
        top_t = set(np.argsort(-t, kind="stable")[:10])
        top_s = set(np.argsort(-s, kind="stable")[:10])
        overlaps.append(len(top_t & top_s) / 10)
    mean = float(np.mean(overlaps))
    return Check(
        name,
        f"{mean:.3f}",
        f"≥ {config.min_teacher_overlap}",
        mean >= config.min_teacher_overlap,
        f"{len(users)} sampled users, model {rec.version}, teacher {fingerprint}",
    )


def serving_errors(config: MonitorConfig) -> Check:
    name = "serving 5xx rate"
    if not config.metrics_url:
        return Check(name, "-", "-", None, "no metrics_url configured")
    request = urllib.request.Request(config.metrics_url)
    if config.metrics_token:
        request.add_header("Authorization", f"Bearer {config.metrics_token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our URL
            text = response.read().decode()
    except OSError as exc:
        return Check(
            name, "-", f"≤ {config.max_error_rate:.1%}", False, f"/metrics unreachable: {exc}"
        )
    total = errors = 0.0
    for line in text.splitlines():
        if line.startswith("kdrec_requests_total{"):
            value = float(line.rsplit(" ", 1)[1])
            total += value
            if 'status="5' in line:
                errors += value
    rate = errors / total if total else 0.0
    return Check(
        name,
        f"{rate:.2%} of {int(total)}",
        f"≤ {config.max_error_rate:.1%}",
        rate <= config.max_error_rate,
        f"from {config.metrics_url}",
    )


def run_checks(
    work_dir: Path, model: str, dataset: str, config: MonitorConfig, now: float | None = None
) -> list[Check]:
    now = time.time() if now is None else now
    registry = Registry(WorkDir(work_dir).registry, model)
    return [
        *freshness(work_dir, dataset, config, now),
        validation_trend(registry, config),
        teacher_overlap(work_dir, model, config),
        serving_errors(config),
    ]


def summary(checks: list[Check]) -> str:
    """One line: every alert's name and value, or that all checks that ran are healthy."""
    alerts = [c for c in checks if c.ok is False]
    if not alerts:
        ran = sum(c.ok is not None for c in checks)
        return f"healthy: {ran} of {len(checks)} checks ran, none crossed its threshold"
    return "; ".join(f"{c.name} {c.value} (threshold {c.threshold})" for c in alerts)


def checks_markdown(checks: list[Check], title: str) -> str:
    """Summary line, a narrow table (fits a browser window), then each check's detail."""
    lines = [f"# {title}", "", summary(checks), "", "| check | status | value | threshold |"]
    lines.append("|---|---|---|---|")
    lines += [f"| {c.name} | {c.status} | {c.value} | {c.threshold} |" for c in checks]
    lines += ["", "Details:", ""] + [f"- {c.name}: {c.detail}" for c in checks]
    return "\n".join(lines) + "\n"
