from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from pipelines import nightly_flow
from pipelines.backfill_flow import backfill
from pipelines.nightly_flow import nightly
from storage.atomic import read_json
from storage.datasets import load_dataset
from storage.inbox import inbox_dir
from storage.registry import Registry
from storage.workdir import WorkDir
from tests.pipelines.test_distill_flow import tiny_run_config

ROOT = Path(__file__).resolve().parents[2]


def _drop_inbox_file(cfg, night: int = 1) -> Path:
    folder = inbox_dir(cfg.work_dir, cfg.dataset.name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"interactions-{night:04d}.csv"
    pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u3"],
            "item_id": [f"i{4 + night}", f"i{5 + night}", f"i{6 + night}"],
            "timestamp": [99_000 * night, 99_001 * night, 99_002 * night],
        }
    ).write_csv(path)
    return path


def test_nightly_empty_inbox_does_nothing(prefect_harness, tmp_path, work, tiny_encoder_path):
    cfg = tiny_run_config(tmp_path, work, tiny_encoder_path)
    result = nightly(cfg)
    assert result.status == "no new data" and result.run is None
    assert not WorkDir(work).cache.exists()  # no teacher work at all
    assert Registry(WorkDir(work).registry, "kdrec").versions() == []


def test_nightly_with_new_file_publishes_and_moves_it(
    prefect_harness, tmp_path, work, tiny_encoder_path
):
    cfg = tiny_run_config(tmp_path, work, tiny_encoder_path)
    path = _drop_inbox_file(cfg)
    result = nightly(cfg)
    assert result.run is not None and result.run.publish.published
    assert result.moved == (path.parent / "processed" / path.name,)
    assert not path.exists() and (path.parent / "processed" / path.name).exists()
    latest = load_dataset(work, "syn")
    assert latest.meta["tables"]["interactions"]["rows"] == 30 * 8 + 3
    assert result.run.teacher.stats["user_texts_encoded"] == 30  # first run: every user
    assert read_json(result.run.run_dir.report_json)["distill"]["init"] == "previous"
    again = nightly(cfg)
    assert again.run is None
    _drop_inbox_file(cfg, night=2)  # the second night starts from the first night's student
    second = nightly(cfg).run
    assert second is not None
    report = read_json(second.run_dir.report_json)  # against the first night's model
    assert report["previous_model"]["version"] == result.run.publish.version
    assert set(report["delta_vs_previous"]) == set(report["previous_model"]["validation"])
    # a night costs what changed: the heads start from the served model's teacher, and only the
    # product (the distilled student) is trained; the gate compared both models on one fold
    first_teacher = result.run.teacher.fingerprint
    assert second.teacher.warm_start == {"from": first_teacher, "items_carried": 40}
    assert [r["model"] for r in report["rows"]] == [
        "Popularity",
        "ItemKNN",
        "EASE",
        "Teacher",
        "Student sequential (KD kl)",
    ]
    versus = report["versus_champion"]
    assert versus["champion_version"] == result.run.publish.version
    assert "on tonight's validation fold" in second.publish.reason


def test_a_night_with_new_items_publishes_a_bundle_that_recommends_them(
    prefect_harness, tmp_path, work, tiny_encoder_path
):
    cfg = tiny_run_config(tmp_path, work, tiny_encoder_path)
    folder = inbox_dir(cfg.work_dir, cfg.dataset.name)
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(  # in the catalog tonight, nobody has touched them yet
        {
            "item_id": ["n1", "n2", "n3"],
            "title": ["Brand New Drama", "Comedy Arrival", "Action Premiere"],
            "year": ["2001", "2001", "2002"],
            "genres": ["Drama", "Comedy", "Action|Horror"],
        }
    ).write_csv(folder / "items-0001.csv")
    result = nightly(cfg).run
    assert result is not None and result.publish.published, result
    from distill.serving.bundle import StudentBundle
    from distill.serving.recommend import Recommender

    rec = Recommender.in_work_dir(work)
    new = [rec.item_row[i] for i in ("n1", "n2", "n3")]
    bundle = StudentBundle(rec.path)
    tower, scale = bundle.content_tower()
    emb = result.teacher.cache.vectors("items", "embedding")
    with torch.no_grad():  # served from text: scale x the content tower, not their ID rows
        expected = scale * tower(torch.as_tensor(emb[new])).numpy()
    np.testing.assert_allclose(rec.encoder.item_vecs.numpy()[new], expected, atol=1e-5)
    tops = rec.recommend_batch([f"u{u}" for u in range(30)], k=10)
    shown = {r.item_id for top in tops for r in top} & {"n1", "n2", "n3"}
    assert shown, "no new item reached any user's top 10"


def test_failed_nightly_leaves_the_inbox_file(
    prefect_harness, tmp_path, work, tiny_encoder_path, monkeypatch
):
    cfg = tiny_run_config(tmp_path, work, tiny_encoder_path)
    path = _drop_inbox_file(cfg)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure after ingest")

    monkeypatch.setattr(nightly_flow, "distill", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        nightly(cfg)
    assert path.exists()


def test_backfill_two_days_then_repeat_builds_nothing(
    prefect_harness, tmp_path, work, tiny_encoder_path
):
    cfg = tiny_run_config(tmp_path, work, tiny_encoder_path)
    # stretch the synthetic timeline (t = 1000..1099 s) over 100 days from 1970-01-01
    path = cfg.dataset.interactions
    pl.read_csv(path).with_columns((pl.col("timestamp") - 1000) * 86_400).write_csv(path)
    result = backfill(date(1970, 3, 1), date(1970, 3, 2), cfg)
    assert [b.day for b in result.built] == ["1970-03-01", "1970-03-02"]
    registry = Registry(WorkDir(work).registry, "kdrec")
    assert len(registry.versions()) == 2 and registry.current_version() is None
    assert registry.bundle(result.built[0].version).manifest["as_of_day"] == "1970-03-01"
    # the second day re-encodes only the texts of users whose history changed that day
    assert 0 < result.built[1].teacher_texts_encoded < 30
    repeat = backfill(date(1970, 3, 1), date(1970, 3, 2), cfg)
    assert repeat.built == [] and repeat.skipped == ["1970-03-01", "1970-03-02"]


def test_prefect_yaml_deploys_against_the_api(prefect_harness, tmp_path):
    from prefect.settings import PREFECT_API_URL

    env_cmd = [sys.executable, "-m", "prefect"]
    env = {
        **__import__("os").environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "KDREC_PROJECT_DIR": str(ROOT),
    }
    pool = subprocess.run(
        [*env_cmd, "work-pool", "create", "kdrec-local", "--type", "process", "--overwrite"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert pool.returncode == 0, pool.stderr
    deploy = subprocess.run(
        [*env_cmd, "--no-prompt", "deploy", "--all"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    listed = subprocess.run(
        [*env_cmd, "deployment", "ls"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    for name in ("nightly", "backfill", "monitor", "distill"):
        assert name in listed.stdout, listed.stdout
    automations = subprocess.run(
        [*env_cmd, "automation", "ls"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert "monitor" in automations.stdout, automations.stdout  # runs after each nightly


def test_the_example_alert_automation_is_accepted(prefect_harness, tmp_path):
    """configs/automations/monitor-alert.yaml, wired to a block as `make alerts` does."""
    from prefect.blocks.notifications import SlackWebhook
    from prefect.settings import PREFECT_API_URL

    block_id = SlackWebhook(url="http://127.0.0.1:9/hook").save("kdrec-alerts", overwrite=True)
    text = (ROOT / "configs" / "automations" / "monitor-alert.yaml").read_text()
    filled = tmp_path / "monitor-alert.yaml"
    filled.write_text(text.replace("REPLACE_WITH_BLOCK_ID", str(block_id)))
    env = {**__import__("os").environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    cmd = [sys.executable, "-m", "prefect", "automation"]
    created = subprocess.run(
        [*cmd, "create", "--from-file", str(filled)], env=env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stdout + created.stderr
    listed = subprocess.run([*cmd, "ls"], env=env, capture_output=True, text=True)
    assert "kdrec monitor alert" in listed.stdout, listed.stdout
