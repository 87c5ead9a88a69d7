"""Monitor checks: healthy, stale data, a regressed model, serving errors."""

from __future__ import annotations

import shutil
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from distill.studies.monitor import DAY, MonitorConfig, checks_markdown, run_checks, summary
from storage.atomic import read_json
from storage.datasets import load_dataset
from storage.registry import Registry


@pytest.fixture
def work(published, tmp_path):
    """A copy of the published work dir (dataset `syn`, two versions; no teacher cache)."""
    root = tmp_path / "work"
    shutil.copytree(published["registry"].parent, root)
    return root


def made_at(work) -> float:
    meta = read_json(load_dataset(work, "syn").path / "dataset.json")
    return datetime.fromisoformat(meta["created_at"]).timestamp()


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_healthy_model_passes(work):
    checks = run_checks(work, "kdrec", "syn", MonitorConfig(), now=made_at(work) + DAY)
    assert not [c for c in checks if c.ok is False], checks_markdown(checks, "t")
    assert by_name(checks)["dataset version age"].ok
    assert by_name(checks)["validation vs previous"].ok is None  # the other is a stored backfill
    assert by_name(checks)["teacher vs student overlap@10"].ok is None  # no teacher cache here
    assert summary(checks).startswith("healthy")


def test_stale_data_and_old_events_alert(work):
    config = MonitorConfig(max_interaction_age_days=30)
    checks = by_name(run_checks(work, "kdrec", "syn", config, now=made_at(work) + 3 * DAY))
    assert checks["dataset version age"].ok is False
    assert checks["newest interaction age"].ok is False  # synthetic events are from 1970


def test_a_regressed_model_alerts_with_the_reason(work):
    registry = Registry(work / "registry", "kdrec")
    current = registry.bundle()
    files = {p.name: p.read_bytes() for p in current.path.iterdir() if p.name != "manifest.json"}
    files["report.json"] = b'{"worse": true}'
    before = current.manifest["validation"]["ndcg@10"]
    worse = {**current.manifest["validation"], "ndcg@10": before * 0.8}
    files["config.json"] = files["config.json"] + b" "  # new content: a new version
    assert registry.publish(files, validation=worse, force=True).published
    checks = run_checks(work, "kdrec", "syn", MonitorConfig(), now=made_at(work) + DAY)
    alert = by_name(checks)["validation vs previous"]
    assert alert.ok is False and "-20.0%" in alert.value
    assert summary(checks).startswith("validation vs previous")


def test_validation_vs_previous_compares_on_the_same_fold_when_the_publish_measured_it(work):
    registry = Registry(work / "registry", "kdrec")
    current = registry.bundle()
    files = {p.name: p.read_bytes() for p in current.path.iterdir() if p.name != "manifest.json"}
    files["config.json"] = files["config.json"] + b"  "
    before = current.manifest["validation"]["ndcg@10"]
    # a harder night: the recorded validation fell 20 %, but on the same fold the new model is
    # as good as the one it replaced
    lower = {**current.manifest["validation"], "ndcg@10": before * 0.8}
    versus = {
        "champion_version": current.version,
        "champion": {"ndcg@10": before * 0.79},
        "challenger": lower,
        "unknown_targets": 0,
        "targets": 10,
        "test": {"p_value": 0.9, "relative_gain": 0.01},
    }
    assert registry.publish(files, validation=lower, versus=versus).published
    checks = run_checks(work, "kdrec", "syn", MonitorConfig(), now=made_at(work) + DAY)
    check = by_name(checks)["validation vs previous"]
    assert check.ok is True and "same validation fold" in check.detail, check


class Metrics(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        self.send_response(200)
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(("errors", "ok"), [(0, True), (5, False)])
def test_serving_error_rate_from_metrics(work, errors, ok):
    Metrics.body = (
        'kdrec_requests_total{endpoint="/recommend",status="200"} 95.0\n'
        'kdrec_requests_total{endpoint="/recommend",status="404"} 3.0\n'
        f'kdrec_requests_total{{endpoint="/recommend",status="500"}} {errors}.0\n'
    ).encode()
    server = HTTPServer(("127.0.0.1", 0), Metrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        config = MonitorConfig(metrics_url=url)
        check = by_name(run_checks(work, "kdrec", "syn", config, now=made_at(work)))[
            "serving 5xx rate"
        ]
    finally:
        server.shutdown()
        server.server_close()  # a closed port refuses at once; an open one lets the check time out
    assert check.ok is ok, check
    unreachable = MonitorConfig(metrics_url=url)
    check = by_name(run_checks(work, "kdrec", "syn", unreachable, now=made_at(work)))
    serving = check["serving 5xx rate"]
    assert serving.ok is False and "unreachable" in serving.detail
