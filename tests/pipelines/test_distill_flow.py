from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from distill.evaluation.report.per_user import read_per_user
from distill.serving.recommend import Recommender
from distill.student.config import StudentConfig
from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.training.loop import LoopConfig
from pipelines.config import RunConfig, RunnerConfig
from pipelines.distill_flow import bundle_rows, distill
from pipelines.monitor_flow import monitor
from pipelines.regime import ScalingConfig
from storage.atomic import read_json
from storage.datasets import DatasetConfig
from storage.registry import Provenance, Registry
from storage.workdir import WorkDir
from tests.conftest import synthetic_tables, write_tables


def tiny_run_config(tmp_path: Path, work: Path, model: Path, **kw) -> RunConfig:
    paths = write_tables(tmp_path / "src", synthetic_tables())
    return RunConfig(
        work_dir=work.resolve(),
        dataset=DatasetConfig(name="syn", source="files", **paths),
        teacher=TeacherConfig(
            model_path=model,
            users_per_shard=8,
            adapt=AdaptConfig(
                dim=8, n_heads=2, history_len=6, heads=1, loop=LoopConfig(max_epochs=2)
            ),
        ),
        student=StudentConfig(dim=8, history_len=6),
        sasrec=StudentConfig(dim=8, history_len=6),  # the student's undistilled arm
        train=LoopConfig(max_epochs=2, patience=1, batch_size=8),
        **kw,
    )


# the dask run also takes the large-catalog regime: the threshold under the synthetic catalog's
# 40 items (one flow run checks both; CI's time budget)
SAMPLED = ScalingConfig(
    sampled_above_items=10,
    negatives=5,
    position_last=2,
    candidates_top_k=5,
    users_per_shard=8,
    eval_users=20,
)


@pytest.mark.parametrize("runner", ["local", "dask"])
def test_distill_flow_end_to_end(
    prefect_harness, tmp_path, work, tiny_encoder_path, runner, caplog
):
    """The whole flow, published and served; with dask, also on the sampled regime."""
    cfg = tiny_run_config(
        tmp_path,
        work,
        tiny_encoder_path,
        runner=RunnerConfig(kind=runner, dask_workers=2),
        scaling=SAMPLED if runner == "dask" else ScalingConfig(),
    )
    with caplog.at_level("INFO"):
        result = distill(cfg)
    publish = result.publish
    assert publish.published, publish
    run_dir = result.run_dir.path
    for name in ("report.json", "report.md", "val_ndcg.png", "activity.png"):
        assert (run_dir / name).exists(), name
    report = result.report.as_json()
    assert {"kd_vs_no_kd", "bars", "breakdown", "cost"} <= set(report)
    bundle = Registry(WorkDir(work).registry, "kdrec").bundle()
    bundle.verify()
    # one report per run: the run folder's report.json is the bundle's, byte for byte; the gate's
    # decision is beside it and in report.md
    assert (run_dir / "report.json").read_bytes() == (bundle.path / "report.json").read_bytes()
    assert read_json(run_dir / "publish.json")["version"] == bundle.version
    assert f"Publish (regression gate): {publish.reason}" in (run_dir / "report.md").read_text()
    assert set(bundle.manifest["files"]) == {
        "student.safetensors",
        "content.safetensors",
        "config.json",
        "items.faiss",
        "items.sq8.faiss",
        "items.parquet",
        "users.parquet",
        "report.json",
    }
    assert bundle.manifest["teacher_fingerprint"] == result.teacher.fingerprint
    assert len(Recommender.in_work_dir(work).recommend("u1", k=3)) == 3
    rows = {r["field"]: r["value"] for r in bundle_rows(publish)}
    # what the UI shows, against what the run knows independently of the manifest
    assert rows["path"] == str(WorkDir(work).registry.resolve() / "kdrec" / rows["version"])
    assert rows["dataset"] == f"syn@{Path(result.teacher.plan.dataset_path).name}"
    distilled = next(r for r in report["rows"] if r["distilled"])
    assert rows["validation NDCG@10"] == str(round(distilled["valid_ndcg@10"]["mean"], 4))
    assert rows["gate"] == "first publish" and rows["signed"] in ("True", "False")
    if runner == "local":
        assert report["regime"] == "full" and read_json(result.run_dir.timings)["regime"] == "full"
        check_report_artifact(run_dir, report)
        check_monitor(cfg, work)
    else:
        check_sampled_regime(result, caplog.messages)


def check_sampled_regime(result, messages: list[str]) -> None:
    """A catalog over `scaling.sampled_above_items`: the teacher labels candidates and the last
    prefixes only, every softmax is sampled, the loops follow the schedule (the config's own
    epochs kept); the log, the report and timings.json name the regime."""
    assert any("regime: sampled (40 items > scaling" in m for m in messages)
    report = result.report.as_json()
    assert report["regime"] == "sampled"
    assert report["student"]["sampled_negatives"] == 5
    assert report["sasrec"]["sampled_negatives"] == 5
    loop = report["loop"]
    assert (loop["schedule"], loop["max_epochs"]) == ("cosine", 2)  # the config's epochs
    plan = result.teacher.plan.config
    assert (plan["pairs"], plan["position_last"]) == ("candidates", 2)
    assert plan["adapt"]["sampled_negatives"] == 5
    assert "regime: sampled" in (result.run_dir.path / "report.md").read_text()
    timings = read_json(result.run_dir.timings)
    assert timings["regime"] == "sampled" and timings["seconds"]["total"] > 0
    # every row's per-user test results beside the report: 20 sampled users, the report's means
    per_user = read_per_user(result.run_dir.per_user)
    assert set(per_user) == {r["model"] for r in report["rows"]}
    for row in report["rows"]:
        results = per_user[row["model"]]
        assert all(len(r.users) == 20 for r in results)
        mean = np.mean([r.metrics["ndcg@10"] for r in results])
        assert mean == pytest.approx(row["metrics"]["ndcg@10"]["mean"])


def check_report_artifact(run_dir: Path, report: dict) -> None:
    """The UI's report shows the plots (data URIs); report.md links the files beside it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        TaskRunFilter,
        TaskRunFilterName,
    )
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        [artifact] = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["kdrec-report"])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    assert artifact.data.count("](data:image/png;base64,") == 2, artifact.data[:300]
    with get_client(sync_client=True) as client:  # training epochs, as progress bars
        for key in ("teacher-head-progress", "student-progress"):
            [bar] = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                sort=ArtifactSort.CREATED_DESC,
                limit=1,
            )
            assert bar.data == 100.0 and "validation" in bar.description, (key, bar.description)
        # every trained row x seed was its own task run
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_=" seed 0")), limit=200
        )
    trained = {r["model"] for r in report["rows"] if r["role"] != "teacher" and r["params"] > 0}
    trained -= {"Popularity", "ItemKNN", "EASE"}
    names = {r.name for r in runs}
    assert {f"{model} seed 0" for model in trained} <= names, names
    assert len(trained) >= 3
    on_disk = (run_dir / "report.md").read_text()
    assert "](val_ndcg.png)" in on_disk and "](activity.png)" in on_disk


def check_monitor(cfg: RunConfig, work: Path) -> None:
    """Healthy right after the run (drift measured against the teacher cache); an injected
    regression makes the flow run Failed with the reason as its message."""
    healthy = monitor(cfg)
    drift = next(c for c in healthy if c.name == "teacher vs student overlap@10")
    assert drift.ok is True, drift
    registry = Registry(WorkDir(work).registry, "kdrec")
    current = registry.bundle()
    files = {p.name: p.read_bytes() for p in current.path.iterdir() if p.name != "manifest.json"}
    files["report.json"] = b'{"injected": "regression"}'
    files["config.json"] += b" "
    worse = {"ndcg@10": current.manifest["validation"]["ndcg@10"] * 0.5}
    extra = Provenance(teacher_fingerprint=current.manifest["teacher_fingerprint"])
    assert registry.publish(files, extra, validation=worse, force=True).published
    state = monitor(cfg, return_state=True)
    assert state.is_failed()
    assert "validation vs previous" in state.message and "-50.0%" in state.message
    logs = run_logs(state.state_details.flow_run_id)  # the run's own page says why it failed
    assert any("monitor run failed" in m and "validation vs previous" in m for m in logs), logs


def run_logs(flow_run_id) -> list[str]:
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        for _ in range(50):
            messages = [log.message for log in client.read_logs(log_filter=flt)]
            if any("run failed" in m for m in messages):
                break
            time.sleep(0.2)
    return messages


def test_quality_with_the_frontier_reports_every_shape_with_and_without_the_teacher(
    prefect_harness, tmp_path, work, tiny_encoder_path
):
    from distill.student.config import FrontierConfig

    shapes = FrontierConfig(shapes=["4x1", "8x2"], seeds=1, latency_users=20)
    cfg = tiny_run_config(tmp_path, work, tiny_encoder_path, publish=False, frontier=shapes)
    result = distill(cfg)
    section = result.report.as_json()["frontier"]
    assert [(r["dim"], r["n_layers"], r["distilled"]) for r in section["rows"]] == [
        (4, 1, False),
        (4, 1, True),
        (8, 2, False),
        (8, 2, True),
    ]
    contract = {"seeds", "valid_ndcg@10", "test_ndcg@10", "params", "bundle_bytes", "p50_ms"}
    for row in section["rows"]:
        assert contract | {"p99_ms", "train_seconds", "int8_test_ndcg@10"} <= set(row)
        assert 0 <= row["test_ndcg@10"] <= 1 and row["p50_ms"] > 0 and row["seeds"] == 1
    small, large = section["rows"][0], section["rows"][2]
    assert small["params"] < large["params"] and small["bundle_bytes"] < large["bundle_bytes"]
    assert [(t["dim"], t["n_layers"]) for t in section["tests"]] == [(4, 1), (8, 2)]
    run_dir = result.run_dir.path
    assert (run_dir / "frontier.png").exists()
    text = (run_dir / "report.md").read_text()
    assert "Lightweight students" in text and "| 4x1 | distilled |" in text
    assert "frontier.png" in text


@pytest.mark.slow  # about 45 s: every row, every scale, every grid point on tiny data
def test_quality_with_new_items_scores_every_row_four_ways_and_tunes_the_baselines(
    prefect_harness, tmp_path, work, tiny_encoder_path
):
    from distill.student.content import ContentConfig
    from pipelines.config import SplitConfig

    content = ContentConfig(
        epochs=1, scales=[0.5, 1.0], dropoutnet_id_dropout=[0.2, 0.8], content_knn_k=[None, 3]
    )
    cfg = tiny_run_config(
        tmp_path,
        work,
        tiny_encoder_path,
        publish=False,
        split=SplitConfig(new_items=0.25),
        content=content,
    )
    result = distill(cfg)
    section = result.report.as_json()["new_items"]
    text = (result.run_dir.path / "report.md").read_text()
    assert "| mixed | scale |" in text and "Tuned on validation (dropoutnet" in text
    assert section["rule"] == "mixed"
    for row in section["rows"]:
        assert {"warm", "new_among_new", "new_among_all", "mixed"} <= set(row)
    names = [r["model"] for r in section["rows"] if r["role"] == "baseline"]
    # one DropoutNet-style row and one content kNN row: the grid's best on validation
    assert sum(n.startswith("Student DropoutNet") for n in names) == 1
    assert sum(n.startswith("Content kNN") for n in names) == 1
    assert section["tuning"]["dropoutnet"]["chosen"] in names
    assert len(section["tuning"]["dropoutnet"]["valid_mixed_ndcg@10"]) == 2
    assert len(section["tuning"]["content_knn"]["valid_mixed_ndcg@10"]) == 2
    relative = [r["model"] for r in section["rows"] if r["role"] == "relative"]
    assert len(relative) == 3  # SASRec + content tower, the distilled student, the DropoutNet
    expected = {
        "mixed_vs_sasrec",
        "mixed_vs_sasrec_content",
        "mixed_vs_dropoutnet",
        "vs_dropoutnet",
        "vs_sasrec_content",
        "warm_vs_sasrec",
        "vs_dropoutnet_equal_warm",
        "relative_vs_sasrec_content",
        "relative_vs_dropoutnet",
    }
    assert set(section["tests"]) == expected
    users = section["users"]["test"]
    for test in section["tests"].values():  # users are the unit, never users x seeds
        assert test["n_pairs"] <= max(users, 30) and len(test["seeds"]["treated"]) == 1
        assert len(test["ci"]) == 2
