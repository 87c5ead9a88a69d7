"""The recipe's regime, picked from the catalog's size: one recipe (the adapted teacher, the
sequential student) at every size, with what a large catalog cannot afford replaced.

- **full** (small catalogs, ML-100K): every softmax over every item, the teacher's label over
  every (user, item) pair and its top-K after every prefix, every user evaluated, a constant
  learning rate to patience — the recipe behind the README's ML-100K numbers.
- **sampled** (above `scaling.sampled_above_items` items): the teacher head, the plain SASRec and
  the student train on a log-Q corrected sampled softmax (distill/nn/sampled.py); the teacher
  labels each user's candidates, not every item, and its top-K after the last
  `scaling.position_last` prefixes only (bounded in rows: users x P x K); evaluation reads a
  seeded sample of users; every training runs a warm-up + cosine schedule over an epoch budget
  (a large catalog's epoch is many ML-100K epochs of steps).

A setting the config changed from its default wins over the regime's: the regime fills in only
what is at its default value (so configs/default.yaml, which writes every default, leaves the
regime free). To keep a default on a large catalog, pin `scaling.regime: full`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Regime = Literal["full", "sampled"]


class ScalingConfig(BaseModel):
    """How the recipe adapts to the catalog's size."""

    model_config = ConfigDict(extra="forbid")

    regime: Literal["auto", "full", "sampled"] = "auto"  # auto: picked from the item count
    sampled_above_items: int = Field(5_000, ge=1)  # auto: sampled above this many items
    negatives: int = Field(1_024, ge=1)  # sampled: uniform negatives a step (+ in-batch ones)
    position_last: int = Field(10, ge=1)  # sampled: teacher top-K after this many last prefixes
    candidates_top_k: int = Field(50, ge=1)  # sampled: teacher candidates per user (+ randoms)
    users_per_shard: int = Field(2_048, ge=1)  # sampled: users per soft-label shard
    eval_users: int = Field(2_000, ge=1)  # sampled: evaluated users per fold (seeded sample)
    epochs: int = Field(10, ge=1)  # sampled: every training's epoch budget (cosine to 0)
    warmup_epochs: int = Field(1, ge=0)  # sampled: linear warm-up before the decay
    batch_size: int = Field(32, ge=1)  # sampled: windows a step (columns grow with it)


@dataclass(frozen=True)
class RegimeChoice:
    """The regime a run uses, why, and the settings it filled in (dotted key -> value)."""

    regime: Regime
    reason: str
    filled: dict[str, object] = field(default_factory=dict)

    def line(self) -> str:
        changed = ", ".join(f"{k}={v}" for k, v in self.filled.items()) or "nothing"
        return f"regime: {self.regime} ({self.reason}); set: {changed}"


def choose(scaling: ScalingConfig, n_items: int) -> tuple[Regime, str]:
    """The regime for a catalog of `n_items` items, and why."""
    if scaling.regime != "auto":
        return scaling.regime, f"pinned by scaling.regime, {n_items:,} items"
    if n_items > scaling.sampled_above_items:
        return "sampled", f"{n_items:,} items > scaling.sampled_above_items"
    return "full", f"{n_items:,} items <= scaling.sampled_above_items"


def sampled_settings(scaling: ScalingConfig) -> dict[str, object]:
    """What the sampled regime sets, by dotted path into the run config."""
    loop = {
        "schedule": "cosine",
        "warmup_epochs": scaling.warmup_epochs,
        "max_epochs": scaling.epochs,
        "batch_size": scaling.batch_size,
    }
    return {
        "split.eval_users": scaling.eval_users,
        "teacher.pairs": "candidates",
        "teacher.candidates_top_k": scaling.candidates_top_k,
        "teacher.users_per_shard": scaling.users_per_shard,
        "teacher.position_last": scaling.position_last,
        "teacher.adapt.sampled_negatives": scaling.negatives,
        **{f"teacher.adapt.loop.{k}": v for k, v in loop.items()},
        "student.sampled_negatives": scaling.negatives,
        "sasrec.sampled_negatives": scaling.negatives,
        **{f"train.{k}": v for k, v in loop.items()},
    }


def _default(model: BaseModel, name: str, default: BaseModel | None) -> object:
    """The field's default where `model` sits: the enclosing default object's value (a run
    config's `train` loop has the run's recipe as its default, not LoopConfig's), else the
    class's."""
    if default is not None:
        return getattr(default, name)
    info = type(model).model_fields[name]
    return info.get_default(call_default_factory=True)


def fill(
    model: BaseModel, settings: dict[str, object], default: BaseModel | None = None
) -> tuple[BaseModel, dict[str, object]]:
    """`model` with each dotted setting applied where that field holds its default value
    (`default`: what `model` is when nothing was configured; None = its class's defaults);
    returns the new model and what was applied."""
    by_head: dict[str, dict[str, object]] = {}
    applied: dict[str, object] = {}
    update: dict[str, object] = {}
    for key, value in settings.items():
        head, _, rest = key.partition(".")
        if rest:
            by_head.setdefault(head, {})[rest] = value
        elif (
            getattr(model, head) == _default(model, head, default) and getattr(model, head) != value
        ):
            update[head] = value
            applied[head] = value
    for head, inner in by_head.items():
        child = getattr(model, head)
        child_default = _default(model, head, default)
        assert isinstance(child_default, BaseModel), head
        new_child, got = fill(child, inner, child_default)
        if got:
            update[head] = new_child
            applied |= {f"{head}.{k}": v for k, v in got.items()}
    if not update:
        return model, {}
    merged = model.model_copy(update=update)
    type(model).model_validate(merged.model_dump())  # holds together as if written by hand
    return merged, applied
