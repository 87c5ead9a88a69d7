"""Prefect flow `monitor`: health checks of the published model; Failed when a threshold is crossed.

Deployed hourly and after every completed nightly run (prefect.yaml). A Failed run's state message
is the one-line reason, which a Prefect automation can turn into a notification
(configs/automations/monitor-alert.yaml).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from distill.studies.monitor import Check, MonitorConfig, checks_markdown, run_checks, summary
from pipelines.config import RunConfig, load_config
from pipelines.failures import STOP_HOOKS


class MonitorAlert(RuntimeError):
    """A monitored value crossed its threshold; the message is the one-line reason."""


@flow(name="monitor", log_prints=True, **STOP_HOOKS)
def monitor(
    params: RunConfig | None = None,
    config_path: str | None = None,
    thresholds: MonitorConfig | None = None,
) -> list[Check]:
    """Check data freshness, validation vs the previous model, teacher/student drift and serving
    errors; write the artifacts; fail with the reason if any threshold is crossed."""
    log = get_run_logger()
    params = params or load_config(Path(config_path) if config_path else None)
    thresholds = thresholds or MonitorConfig()
    checks = run_checks(params.work_dir, params.model_name, params.dataset.name, thresholds)
    for check in checks:
        log.info("%s: %s %s (%s) %s", check.name, check.status, check.value, check.threshold,
                 check.detail)  # fmt: skip
    create_markdown_artifact(
        checks_markdown(checks, f"kdrec monitor — {params.model_name}"),
        key="kdrec-monitor",
        description="Model health checks",
    )
    rows = [{"check": c.name, "status": c.status, "value": c.value, "threshold": c.threshold}
            for c in checks]  # fmt: skip
    create_table_artifact(rows, key="kdrec-monitor-table", description="Model health checks")
    if any(c.ok is False for c in checks):
        raise MonitorAlert(summary(checks))
    log.info(summary(checks))
    return checks
