"""One pipeline run's folder, `runs/<timestamp>/`, and the files in it (this module owns the names).

<run>/
  report.json       the report (the staged bundle carries the same bytes)
  report.md         the report as markdown, with the gate's decision (written once, at the end)
  *.png             the report's plots (distill/evaluation/report/plots.py names them)
  per_user.parquet  every report row's test metrics per (seed, user): what a paired test of two
                    runs' models on the same users reads (bench/scale.py)
  validation.json   the product's validation metrics, which the regression gate reads
  publish.json      the gate's decision
  timings.json      the run's stage timings in seconds and the recipe's regime
  bundle/           the staged bundle, published from here
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def new(cls, runs: Path) -> RunDir:
        """A fresh run folder under `runs` (not created), named by the UTC time in µs."""
        return cls(runs / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f"))

    @property
    def report_json(self) -> Path:
        return self.path / "report.json"

    @property
    def report_md(self) -> Path:
        return self.path / "report.md"

    @property
    def per_user(self) -> Path:
        return self.path / "per_user.parquet"

    @property
    def validation(self) -> Path:
        return self.path / "validation.json"

    @property
    def publish(self) -> Path:
        return self.path / "publish.json"

    @property
    def timings(self) -> Path:
        return self.path / "timings.json"

    @property
    def bundle(self) -> Path:
        return self.path / "bundle"
