from __future__ import annotations

from pathlib import Path

import pytest

from distill.recommend import Recommender
from distill.student import StudentConfig
from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.train import LoopConfig
from pipelines.config import RunConfig, RunnerConfig
from pipelines.distill_flow import distill
from storage.datasets import DatasetConfig
from storage.registry import Registry
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
            adapt=AdaptConfig(dim=8, n_heads=2, history_len=6, max_epochs=2, heads=1),
        ),
        student=StudentConfig(dim=8, history_len=6),
        sasrec=StudentConfig(dim=8, history_len=6),  # the student's undistilled arm
        train=LoopConfig(max_epochs=2, patience=1, batch_size=8),
        **kw,
    )


@pytest.mark.parametrize("runner", ["local", "dask"])
def test_distill_flow_end_to_end(prefect_harness, tmp_path, work, tiny_encoder_path, runner):
    cfg = tiny_run_config(
        tmp_path, work, tiny_encoder_path, runner=RunnerConfig(kind=runner, dask_workers=2)
    )
    result = distill(cfg)
    publish = result["publish"]
    assert publish["published"], publish
    run_dir = Path(result["run_dir"])
    for name in ("report.json", "report.md", "val_ndcg.png", "activity.png"):
        assert (run_dir / name).exists(), name
    report = result["report"]
    assert {"kd_vs_no_kd", "bars", "breakdown", "cost"} <= set(report)
    bundle = Registry(WorkDir(work).registry, "kdrec").bundle()
    bundle.verify()
    assert set(bundle.manifest["files"]) == {
        "student.safetensors",
        "config.json",
        "items.faiss",
        "items.sq8.faiss",
        "items.parquet",
        "users.parquet",
        "report.json",
    }
    assert bundle.manifest["teacher_fingerprint"] == result["teacher"]["fingerprint"]
    assert len(Recommender.load(WorkDir(work).registry).recommend("u1", k=3)) == 3
