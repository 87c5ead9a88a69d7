from __future__ import annotations

import pytest

from distill.teacher.base import AdaptConfig, TeacherConfig
from distill.training.loop import LoopConfig
from pipelines.config import RunnerConfig
from pipelines.teacher_flow import run_teacher_flow


def _config(model):
    return TeacherConfig(
        model_path=model,
        users_per_shard=8,
        adapt=AdaptConfig(dim=8, n_heads=2, history_len=6, heads=1, loop=LoopConfig(max_epochs=2)),
    )


@pytest.mark.parametrize(
    "runner", [RunnerConfig(), RunnerConfig(kind="dask", dask_workers=2)], ids=["local", "dask"]
)
def test_teacher_flow_runs_and_reruns_without_work(
    prefect_harness, synthetic, work, tiny_encoder_path, runner
):
    dataset, split = synthetic
    result = run_teacher_flow(_config(tiny_encoder_path), dataset, None, work.resolve(), runner)
    prefixes = sum(max(len(seq) - 1, 0) for seq in split.train_sequences())
    top_k = min(_config(tiny_encoder_path).position_top_k, split.n_items)
    assert not result.reused
    assert result.pairs == split.n_users * split.n_items + prefixes * top_k
    again = run_teacher_flow(_config(tiny_encoder_path), dataset, None, work.resolve(), runner)
    assert again.reused and again.fingerprint == result.fingerprint
    assert again.texts_encoded == 0
