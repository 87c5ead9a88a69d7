"""The report's plots (PNG): validation curves, NDCG@10 by user activity, the frontier."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from distill.evaluation.report.model import ModelRow, Report
from storage.atomic import atomic_write_bytes

PLOTS = (  # file name in the run folder, caption
    ("val_ndcg.png", "Validation NDCG@10 by epoch, students, seed 0"),
    ("activity.png", "Test NDCG@10 by user activity"),
    ("frontier.png", "Lightweight students: test NDCG@10 against p50 latency per request"),
)


def plots(folder: Path) -> list[tuple[str, Path]]:
    """The report's plots that exist in `folder`, as (caption, path)."""
    return [(caption, folder / name) for name, caption in PLOTS if (folder / name).exists()]


def write_plots(report: Report, folder: Path, rows: list[ModelRow]) -> None:
    """The run's plots beside its report (validation curves, activity, the frontier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        if row.role == "student" and row.history:
            ax.plot(
                [h["epoch"] for h in row.history[0]],
                [h["val"] for h in row.history[0]],
                label=row.model,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@10")
    ax.set_title("Students, seed 0")
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(folder / "val_ndcg.png", buf.getvalue())

    part = report.breakdown["activity"]
    if part:
        models = [c for c in next(iter(part.values())) if c != "users"]
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            ax.bar(
                np.arange(len(part)) + j * width,
                [v[model] for v in part.values()],
                width,
                label=model,
            )
        ax.set_xticks(np.arange(len(part)) + 0.4 - width / 2, list(part))
        ax.set_ylabel("test NDCG@10")
        ax.set_title("NDCG@10 by user activity")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off the bars
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(folder / "activity.png", buf.getvalue())
    if report.frontier:
        atomic_write_bytes(folder / "frontier.png", frontier_plot(report.frontier["rows"]))


def frontier_plot(rows: list[dict], title: str = "SASRec students: width x blocks") -> bytes:
    """Test NDCG@10 against p50 latency, distilled and without the teacher (PNG bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for distilled, marker, label in ((False, "o", "no teacher"), (True, "s", "distilled")):
        mine = [r for r in rows if r["distilled"] == distilled]
        ax.scatter(
            [r["p50_ms"] for r in mine],
            [r["test_ndcg@10"] for r in mine],
            marker=marker,
            label=label,
        )
        for r in mine:
            ax.annotate(
                f"{r['dim']}x{r['n_layers']}",
                (r["p50_ms"], r["test_ndcg@10"]),
                fontsize=7,
                xytext=(3, 3),
                textcoords="offset points",
            )
    ax.set_xlabel("p50 latency per history request (ms, one thread)")
    ax.set_ylabel("test NDCG@10 (mean over seeds)")
    ax.set_title(title)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
