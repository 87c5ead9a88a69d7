"""The run configuration: one pydantic model (a form in the Prefect UI), loaded from YAML.

Unknown keys, wrong types and impossible values are rejected when the config is built, before any
work starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from storage.datasets import DatasetConfig


def default_work_dir() -> Path:
    return Path(os.environ.get("KDREC_WORK_DIR", "work"))


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: int | None = Field(None, ge=0)  # epoch seconds; None = leave-one-out on everything


class RunConfig(BaseModel):
    """Everything one pipeline run needs."""

    model_config = ConfigDict(extra="forbid")

    work_dir: Path = Field(default_factory=default_work_dir)  # data/, cache/, registry/, runs/
    dataset: DatasetConfig = DatasetConfig()
    split: SplitConfig = SplitConfig()


def load_config(path: Path | None, **overrides: object) -> RunConfig:
    """Read a YAML config (safe loader) and apply top-level overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"config file {path} not found")
        with open(path) as f:
            data = yaml.safe_load(f) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {path} must hold a mapping, not {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig.model_validate(data)
