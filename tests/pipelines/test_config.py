from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.config import RunConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_default_yaml_matches_the_code_defaults():
    from_file = load_config(ROOT / "configs" / "default.yaml")
    assert from_file.model_dump(exclude={"work_dir"}) == RunConfig().model_dump(
        exclude={"work_dir"}
    )


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    assert isinstance(load_config(path), RunConfig)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"unknown_key": 1}, "Extra inputs are not permitted"),
        ({"distill": {"alpha": -0.1}}, "greater than or equal to 0"),
        ({"distill": {"temperature": 0}}, "greater than 0"),
        ({"teacher": {"candidates_top_k": 0}}, "greater than or equal to 1"),
        ({"teacher": {"model_path": ""}}, "model_path is empty"),
        ({"teacher": {"adapt": {"dim": 30, "n_heads": 4}}}, "divisible"),
        ({"student": {"dim": "wide"}}, "valid integer"),
        ({"seeds": []}, "at least 1"),
        ({"model_name": "../x"}, "invalid model name"),
        ({"runner": {"dask_address": "tcp://x:1"}}, "runner.kind is not 'dask'"),
        ({"teacher": {"kind": "causal"}}, "needs pairs: candidates"),
        ({"student": {"kind": "two_tower"}}, "init: teacher needs student.kind: sequential"),
        ({"student": {"dim": 32}}, r"shaped like the teacher head \(student vs teacher.adapt: dim"),
        ({"teacher": {"adapt": {"mode": "none"}}}, "init: teacher needs an adapted teacher"),
    ],
)
def test_bad_configs_fail_at_construction(data, message):
    with pytest.raises(ValidationError, match=message):
        RunConfig.model_validate(data)


def test_a_random_start_frees_the_student_from_the_head_shape():
    config = RunConfig.model_validate({"student": {"dim": 32}, "distill": {"init": "random"}})
    assert config.student.dim == 32


def test_yaml_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="must hold a mapping"):
        load_config(path)


def test_threads_apply_to_torch_and_faiss(monkeypatch):
    import faiss
    import torch

    from distill.training.loop import apply_threads, available_cores

    for var in ("POLARS_MAX_THREADS", "RAYON_NUM_THREADS"):  # restored after the test
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    before = torch.get_num_threads()
    try:
        assert apply_threads(1) == 1
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        assert os.environ["POLARS_MAX_THREADS"] == "1" == os.environ["RAYON_NUM_THREADS"]
        assert apply_threads("auto") == available_cores() == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert RunConfig().threads == "auto" and RunConfig(threads=3).threads == 3
    for bad in (0, "many"):
        with pytest.raises(ValueError):
            RunConfig(threads=bad)
