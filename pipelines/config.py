"""The run configuration: one pydantic model (a form in the Prefect UI), loaded from YAML.

Unknown keys, wrong types and impossible values are rejected when the config is built, before any
work starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from distill.student.config import FrontierConfig, StudentConfig
from distill.student.content import ContentConfig
from distill.student.fit import DistillConfig
from distill.teacher.base import TeacherConfig
from distill.training.loop import LoopConfig
from pipelines.regime import RegimeChoice, ScalingConfig, choose, fill, sampled_settings
from storage.atomic import validate_name
from storage.datasets import DatasetConfig
from storage.errors import ConfigError, NotFound
from storage.paths import absolute
from storage.registry import GateConfig


def default_work_dir() -> Path:
    """$KDREC_WORK_DIR, else ./work: relative to the current directory, made absolute."""
    return absolute(Path(os.environ.get("KDREC_WORK_DIR", "work")))


class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: int | None = Field(None, ge=0)  # epoch seconds; None = leave-one-out on everything
    # evaluate on a seeded sample of this many users per fold (None = all): full ranking costs
    # users x items, so a large catalog samples users to keep evaluation linear in the catalog
    eval_users: int | None = Field(None, ge=1)
    # the item-cold-start protocol: hold out this share of the items with all their
    # interactions (seeded); every report row is then also scored on them
    # (distill/evaluation/new_items.py)
    new_items: float | None = Field(None, gt=0, lt=1)
    new_items_seed: int = Field(0, ge=0)


class RunnerConfig(BaseModel):
    """Where teacher shard tasks run."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["local", "dask"] = "local"
    dask_address: str | None = None  # scheduler address; None = start a LocalCluster
    dask_workers: int = Field(2, ge=1)  # LocalCluster size

    @model_validator(mode="after")
    def _address_needs_dask(self) -> RunnerConfig:
        if self.dask_address and self.kind != "dask":
            raise ValueError("runner.dask_address is set but runner.kind is not 'dask'")
        return self


class RunConfig(BaseModel):
    """Everything one pipeline run needs."""

    model_config = ConfigDict(extra="forbid")

    work_dir: Path = Field(default_factory=default_work_dir)  # data/, cache/, registry/, runs/
    dataset: DatasetConfig = DatasetConfig()
    split: SplitConfig = SplitConfig()
    teacher: TeacherConfig = TeacherConfig()
    student: StudentConfig = StudentConfig()
    # the plain SASRec row of every report: ID embeddings only, no teacher, the standard recipe
    sasrec: StudentConfig = StudentConfig(kind="sequential", text_projection=False)
    distill: DistillConfig = DistillConfig()
    # the distilled student's content path: places items it has no trained vector for (new ones)
    content: ContentConfig = ContentConfig()
    train: LoopConfig = LoopConfig()
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # students per arm
    # `kdrec quality --frontier`: also train the student at these shapes, with and without the
    # teacher, and report quality against serving cost (distill/studies/frontier.py); null = not
    frontier: FrontierConfig | None = None
    # students trained at once, each in its own process with one torch thread;
    # 0 = the cores this process may use
    train_workers: int = Field(0, ge=0)
    # intra-op threads of torch, FAISS, polars and tokenizers in this process: "auto" = the cores
    # it may use (its affinity mask); training workers run one thread each
    threads: Literal["auto"] | int = "auto"
    model_name: str = "kdrec"  # registry/<model_name>/
    publish: bool = True  # publish the best distilled student to the registry
    force_publish: bool = False  # publish even when the regression gate refuses
    # the gate: the candidate against the served model on the same validation fold
    gate: GateConfig = GateConfig()
    # the nightly student starts from the published model (distill.init: previous, items mapped
    # by id) instead of a teacher head; bench/warm_start.py: best epoch 6 vs 73, better valid/test
    nightly_warm_start: bool = True
    # a night's trainings that start from the served model's weights (teacher heads, student)
    # stop after this many epochs without validation gain (a cold training: train.patience)
    warm_patience: int = Field(5, ge=1)
    quantized_index: bool = True  # also publish items.sq8.faiss (int8) for `serve --index sq8`
    # bundles store HMAC(key, user id), never raw ids; auto: on for bring-your-own (files) data
    pseudonymize_users: Literal["auto", "on", "off"] = "auto"

    @field_validator("work_dir")
    @classmethod
    def _absolute_work_dir(cls, work_dir: Path) -> Path:
        return absolute(work_dir)

    @property
    def pseudonymized(self) -> bool:
        return self.pseudonymize_users == "on" or (
            self.pseudonymize_users == "auto" and self.dataset.source == "files"
        )

    runner: RunnerConfig = RunnerConfig()
    # the recipe's regime by catalog size (pipelines/regime.py): full softmaxes and labels on a
    # small catalog, sampled ones and bounded labels above `scaling.sampled_above_items` items
    scaling: ScalingConfig = ScalingConfig()

    def for_catalog(self, n_items: int) -> tuple[RunConfig, RegimeChoice]:
        """This config with its regime's settings filled in for a catalog of `n_items` items
        (settings the config writes itself are kept), and the choice made."""
        regime, reason = choose(self.scaling, n_items)
        if regime == "full":
            return self, RegimeChoice(regime, reason)
        config, filled = fill(self, sampled_settings(self.scaling))
        assert isinstance(config, RunConfig)
        return config, RegimeChoice(regime, reason, filled)

    @model_validator(mode="after")
    def _names(self) -> RunConfig:
        validate_name(self.model_name, what="model name")
        if isinstance(self.threads, int) and self.threads < 1:
            raise ValueError(f"threads must be 'auto' or at least 1, got {self.threads}")
        if self.sasrec.kind != "sequential" or self.sasrec.text_projection:
            raise ValueError("sasrec must be kind: sequential with text_projection: false")
        if self.student.kind == "sequential" and self.distill.loss == "mse":
            raise ValueError("the sequential student distils top-K labels: loss kl or rank")
        sampled_two_tower = self.student.kind == "two_tower" and self.student.sampled_negatives
        if sampled_two_tower and self.distill.loss == "rank":
            raise ValueError(
                "the two-tower with sampled_negatives distils with loss kl or mse, not rank"
            )
        if self.distill.init in ("teacher", "previous"):  # previous falls back to a head
            self._check_student_fits_head()
        return self

    def _check_student_fits_head(self) -> None:
        head, student = self.teacher.adapt, self.student
        if self.teacher.kind != "embedding" or head.mode == "none":
            raise ValueError(
                "distill.init: teacher needs an adapted teacher (teacher.kind: embedding, "
                "teacher.adapt.mode not none); set distill.init: random"
            )
        if student.kind != "sequential":
            raise ValueError(
                "distill.init: teacher needs student.kind: sequential; set distill.init: random"
            )
        shape = ("dim", "history_len", "n_layers", "n_heads")
        differ = [
            f"{k} {getattr(student, k)} vs {getattr(head, k)}"
            for k in shape
            if getattr(student, k) != getattr(head, k)
        ]
        if differ:
            raise ValueError(
                "distill.init: teacher needs the student shaped like the teacher head "
                f"(student vs teacher.adapt: {', '.join(differ)}); "
                "set distill.init: random"
            )


# the paths a config file may hold, as (section, key); each relative one is taken from the
# config file's folder, so a config means the same files whatever directory runs it
_FILE_PATHS = (
    (None, "work_dir"),
    ("dataset", "interactions"),
    ("dataset", "items"),
    ("dataset", "users"),
    ("teacher", "model_path"),
)


def _anchor_paths(data: dict, folder: Path) -> None:
    """Relative paths written in a config file, made absolute from the file's folder (in
    place). A relative teacher.model_path that is no folder there is left as written (a model
    name the teacher resolves itself)."""
    for section, key in _FILE_PATHS:
        holder = data if section is None else data.get(section)
        if not isinstance(holder, dict) or not isinstance(holder.get(key), str):
            continue
        path = Path(holder[key]).expanduser()
        if path.is_absolute():
            continue
        anchored = absolute(path, anchor=folder)
        if key != "model_path" or anchored.exists():
            holder[key] = str(anchored)


def load_config(path: Path | None, **overrides: object) -> RunConfig:
    """Read a YAML config (safe loader) and apply top-level overrides. Relative paths in the
    file are taken from the file's folder; overrides (the CLI's `--work-dir`) and
    $KDREC_WORK_DIR from the current directory. Raises ConfigError (or NotFound) naming the
    file and what is wrong."""
    data: dict = {}
    where = f"config file {path}" if path is not None else "config"
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise NotFound(f"config file {path} not found")
        try:
            with open(path) as f:
                data = yaml.safe_load(f) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{where} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must hold a mapping, not {type(data).__name__}")
        _anchor_paths(data, absolute(path).parent)
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
