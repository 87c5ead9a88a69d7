"""Every report row's test metrics per (seed, user), as one Parquet table beside report.json:
what a paired test of models from two runs reads (the same evaluated users, `stats.paired`).

Columns: model, seed (the row's result index), user_idx, and one float column per metric.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from distill.evaluation.harness import EvalResult
from distill.evaluation.report.model import ModelRow
from storage.atomic import write_parquet


def write_per_user(path: Path, rows: list[ModelRow]) -> None:
    """The rows' per-user test results, atomically."""
    frames = []
    for row in rows:
        for seed, result in enumerate(row.results):
            frames.append(
                pl.DataFrame(
                    {
                        "model": row.model,
                        "seed": seed,
                        "user_idx": result.users.astype(np.int64),
                        **{k: np.asarray(v, np.float64) for k, v in result.per_user.items()},
                    }
                )
            )
    if frames:
        write_parquet(path, pl.concat(frames, how="diagonal").to_arrow())


def read_per_user(path: Path) -> dict[str, list[EvalResult]]:
    """model -> its per-seed results (per-user arrays, users in the written order); the mean
    metrics are recomputed from them."""
    frame = pl.read_parquet(path)
    metrics = [c for c in frame.columns if c not in ("model", "seed", "user_idx")]
    out: dict[str, list[EvalResult]] = {}
    for (model, _), part in frame.group_by(["model", "seed"], maintain_order=True):
        per_user = {m: part.get_column(m).to_numpy() for m in metrics}
        out.setdefault(str(model), []).append(
            EvalResult(
                metrics={m: float(np.mean(v)) for m, v in per_user.items()},
                per_user=per_user,
                users=part.get_column("user_idx").to_numpy(),
            )
        )
    return out
