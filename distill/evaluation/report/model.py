"""The report's model: what one run measured, as typed values, and report.json's contract.

`Report.as_json()` writes report.json (flat keys, which scripts and the monitor read);
`Report.from_json` reads it back into the same objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from distill.evaluation.harness import EvalResult
from distill.evaluation.stats import Comparison

REPORT_METRICS = ("hr@10", "ndcg@10", "mrr", "recall@20")
SETTINGS = ("teacher_fingerprint", "regime", "student", "sasrec", "distill", "content", "loop")
TESTS = ("kd_vs_no_kd", "kd_vs_best_plain")
SERVED = ("previous_model", "delta_vs_previous", "versus_champion")


@dataclass(frozen=True)
class Stat:
    """A metric over seeds."""

    mean: float
    std: float


@dataclass(frozen=True)
class ValidScore:
    """Validation NDCG@10 of a trained model: mean and spread over seeds, and each seed's."""

    mean: float
    std: float
    seeds: list[float]


@dataclass(frozen=True)
class Row:
    """One model's line of the report: test metrics over seeds and what it costs."""

    model: str
    role: str  # baseline | teacher | student
    distilled: bool
    metrics: dict[str, Stat]
    params: int
    train_seconds: float  # mean over seeds
    users_per_second: float
    valid: ValidScore | None = None  # trained models only

    def ndcg(self) -> float:
        return self.metrics["ndcg@10"].mean

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "role": self.role,
            "distilled": self.distilled,
            "metrics": {name: asdict(stat) for name, stat in self.metrics.items()},
            "params": self.params,
            "train_seconds": self.train_seconds,
            "users_per_second": self.users_per_second,
        }
        if self.valid is not None:
            out["valid_ndcg@10"] = asdict(self.valid)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        valid = data.get("valid_ndcg@10")
        return cls(
            model=data["model"],
            role=data["role"],
            distilled=data["distilled"],
            metrics={name: Stat(**stat) for name, stat in data["metrics"].items()},
            params=data["params"],
            train_seconds=data["train_seconds"],
            users_per_second=data["users_per_second"],
            valid=ValidScore(**valid) if valid else None,
        )


@dataclass
class ModelRow:
    """One model's results over one or more seeds, per user (what the statistics need);
    `row()` is its line of the report."""

    model: str
    role: str  # baseline | teacher | student
    distilled: bool
    results: list[EvalResult]
    params: int
    train_seconds: list[float]
    users_per_second: float
    history: list[list[dict]] = field(default_factory=list)  # per seed: per-epoch training log
    valid: list[float] = field(default_factory=list)  # per seed: validation NDCG@10 (students)

    def metric(self, name: str) -> Stat:
        values = np.array([r.metrics[name] for r in self.results])
        return Stat(float(values.mean()), float(values.std()))

    def _valid(self) -> ValidScore:
        seeds = [float(v) for v in self.valid]
        return ValidScore(float(np.mean(seeds)), float(np.std(seeds)), seeds)

    def row(self) -> Row:
        return Row(
            model=self.model,
            role=self.role,
            distilled=self.distilled,
            metrics={m: self.metric(m) for m in REPORT_METRICS},
            params=int(self.params),
            train_seconds=float(np.mean(self.train_seconds)),
            users_per_second=float(self.users_per_second),
            valid=ValidScore(
                float(np.mean(self.valid)),
                float(np.std(self.valid)),
                [float(v) for v in self.valid],
            )
            if self.valid
            else None,
        )


@dataclass(frozen=True)
class Bar:
    """One quality bar of the product: its target, the measured value, whether it holds."""

    target: str
    value: str
    holds: bool


@dataclass(frozen=True)
class ServingCost:
    """Per-request serving cost of each model as it really serves (distill.student.cost
    .serving_cost): seconds per user, the ratios, and the teacher's one-time nightly cost."""

    seconds_per_user: dict[str, float]
    student_vs_sasrec: float | None
    teacher_vs_student: float | None
    teacher_nightly_seconds: dict[str, float]
    users: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ServingCost:
        return cls(**data)


@dataclass
class Report:
    """One run's comparison of every model on the test fold (standard protocol).

    Built by `build.build_report` (the student stage's `quality`), finished once by
    `bars.finish` (serving cost, the comparison with the served model, the product's bars), written
    once by `render.save_report` (report.json, which the bundle carries byte for byte, and the
    plots) and, after the gate, `render.write_markdown` (report.md); rendered by one function,
    `render.markdown`, for report.md, the Prefect artifact and the terminal.

    The sections other modules own stay their JSON: `breakdown` (build), `served` (the
    champion's head-to-head), `new_items` (evaluation/new_item_rows.py), `frontier`
    (evaluation/frontier.py), `settings` (the configs the students were trained with)."""

    dataset: str
    split: str
    seeds: list[int]
    rows: list[Row]
    breakdown: dict
    settings: dict = field(default_factory=dict)  # SETTINGS: what the students were trained with
    tests: dict[str, Comparison] = field(default_factory=dict)  # TESTS: the distilled student's
    protocol: str = "standard"  # at test a model reads everything before the test item
    cost: ServingCost | None = None
    served: dict = field(default_factory=dict)  # SERVED: vs the model being served
    bars: dict[str, Bar] = field(default_factory=dict)  # the product's quality bars
    new_items: dict | None = None  # the item-cold-start protocol's section, with split.new_items
    frontier: dict | None = None  # the lightweight students, with `kdrec quality --frontier`

    def row(self, *, role: str | None = None, distilled: bool | None = None) -> Row | None:
        """The first row with that role and/or distillation, if any."""
        return next(
            (
                r
                for r in self.rows
                if (role is None or r.role == role)
                and (distilled is None or r.distilled == distilled)
            ),
            None,
        )

    def sasrec(self) -> Row | None:
        """The plain SASRec's row, if the report has one."""
        return next((r for r in self.rows if r.model.startswith("SASRec")), None)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "split": self.split,
            "protocol": self.protocol,
            "seeds": self.seeds,
            "rows": [row.as_json() for row in self.rows],
            "breakdown": self.breakdown,
            **self.settings,
            **{name: test.as_json() for name, test in self.tests.items()},
            **self.served,
        }
        if self.cost is not None:
            out["cost"] = self.cost.as_json()
        if self.new_items is not None:
            out["new_items"] = self.new_items
        if self.frontier is not None:
            out["frontier"] = self.frontier
        if self.bars:
            out["bars"] = {name: asdict(bar) for name, bar in self.bars.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """A report read back from report.json (unknown keys are kept, under settings)."""
        core = (
            "dataset",
            "split",
            "protocol",
            "seeds",
            "rows",
            "breakdown",
            "cost",
            "bars",
            "new_items",
            "frontier",
        )
        cost = data.get("cost")
        return cls(
            dataset=data["dataset"],
            split=data["split"],
            seeds=data["seeds"],
            rows=[Row.from_json(r) for r in data["rows"]],
            breakdown=data["breakdown"],
            settings={k: v for k, v in data.items() if k not in core + TESTS + SERVED},
            tests={k: Comparison.from_json(data[k]) for k in TESTS if k in data},
            protocol=data.get("protocol", "standard"),
            cost=ServingCost.from_json(cost) if cost is not None else None,
            served={k: data[k] for k in SERVED if k in data},
            bars={k: Bar(**v) for k, v in data.get("bars", {}).items()},
            new_items=data.get("new_items"),
            frontier=data.get("frontier"),
        )

    def summary_rows(self) -> list[dict]:
        """One flat row per model (mean test metrics, params): the Prefect table artifact."""
        return [
            {
                "model": r.model,
                "role": r.role,
                **{m: round(v.mean, 4) for m, v in r.metrics.items()},
                "params": r.params,
            }
            for r in self.rows
        ]


def versus_current(versus: dict | None) -> dict:
    """The report's comparison with the served model, both on this run's validation fold
    (`distill.studies.champion.HeadToHead.as_json`); empty when nothing is served yet."""
    if versus is None:
        return {}
    champion, challenger = versus["champion"], versus["challenger"]
    return {
        "previous_model": {"version": versus["champion_version"], "validation": champion},
        "delta_vs_previous": {
            k: challenger[k] - champion[k] for k in sorted(challenger) if k in champion
        },
        "versus_champion": versus,
    }
