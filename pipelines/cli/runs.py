"""The pipeline's commands: `kdrec run`, `quality`, `nightly`, `backfill`, `monitor`, `baselines`
(each runs a flow of pipelines/ off the main thread, then prints what it returned)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pipelines.cli.common import (
    ConfigOpt,
    WorkOpt,
    console,
    metric_table,
    off_main_thread,
    print_report,
    run_config,
)
from pipelines.config import RunConfig

if TYPE_CHECKING:
    from pipelines.distill_flow import DistillRun


def run_cmd(
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
    seeds: Annotated[int | None, typer.Option(help="Students per arm (seeds 0..N-1).")] = None,
    force: Annotated[
        bool, typer.Option(help="Publish even if the regression gate refuses.")
    ] = False,
) -> None:
    """Run the whole pipeline (ingest, teacher, students, report, publish) as a Prefect flow."""
    cfg = run_config(config, work_dir)
    updates: dict = {"force_publish": force or cfg.force_publish}
    if seeds:
        updates["seeds"] = list(range(seeds))
    cfg = cfg.model_copy(update=updates)
    t0 = time.perf_counter()
    result = run_flow(cfg)
    print_report(result.report)
    publish = result.publish
    console.print(f"report: {result.run_dir.report_md}")
    if publish.published:
        console.print(f"published {cfg.model_name}/{publish.version} at {publish.path}")
        _sample_recommendation(cfg)
    else:
        console.print(f"[yellow]not published:[/] {publish.reason}")
    console.print(f"done in {time.perf_counter() - t0:.0f}s")


def _sample_recommendation(cfg: RunConfig) -> None:
    from distill.serving.recommend import Recommender
    from storage.datasets import load_dataset

    rec = Recommender.in_work_dir(cfg.work_dir, cfg.model_name)
    user = load_dataset(cfg.work_dir, cfg.dataset.name).users().get_column("user_id")[0]
    table = Table(title=f"sample: top 5 for user {user}")
    for col in ("item", "title", "score"):
        table.add_column(col)
    for r in rec.recommend(user, 5, fallback="popular"):
        table.add_row(r.item_id, r.title, f"{r.score:.3f}")
    console.print(table)


def quality_cmd(
    seeds: Annotated[int, typer.Option(help="Seeds per student arm.")] = 5,
    frontier: Annotated[
        bool,
        typer.Option(
            help="Also the lightweight students' frontier: the student at several widths x "
            "blocks, with and without the teacher, quality against serving cost (config key "
            "`frontier`; its default shapes 8x2,16x2,32x2,64x2, 2 seeds each)."
        ),
    ] = False,
    frontier_shapes: Annotated[
        str | None,
        typer.Option(help="Shapes of the frontier, e.g. 8x1,16x2 (implies --frontier)."),
    ] = None,
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
) -> None:
    """Train every report arm N times (plain SASRec, undistilled and distilled students); print
    mean ± std and the paired tests against the best plain model. Publishes nothing."""
    from pydantic import ValidationError

    from distill.student.config import FrontierConfig
    from storage.errors import ConfigError

    cfg = run_config(config, work_dir)
    updates: dict = {"seeds": list(range(seeds)), "publish": False}
    if frontier or frontier_shapes:
        chosen = cfg.frontier or FrontierConfig()
        if frontier_shapes:
            shapes = [s.strip() for s in frontier_shapes.split(",") if s.strip()]
            try:
                chosen = FrontierConfig.model_validate({**chosen.model_dump(), "shapes": shapes})
            except ValidationError as exc:
                raise ConfigError(f"--frontier-shapes {frontier_shapes!r}: {exc}") from None
        updates["frontier"] = chosen
    cfg = cfg.model_copy(update=updates)
    result = run_flow(cfg)
    print_report(result.report)
    console.print(f"report: {result.run_dir.report_md}")


def nightly_cmd(config: ConfigOpt = None, work_dir: WorkOpt = None) -> None:
    """Run the nightly flow now: ingest the inbox, re-distill what changed, publish via the gate."""
    from pipelines.nightly_flow import nightly

    t0 = time.perf_counter()
    result = off_main_thread(nightly, run_config(config, work_dir))
    if result.run is None:
        console.print("inbox empty: no teacher work, nothing trained, nothing published")
    else:
        console.print(
            f"publish: {result.run.publish.reason}; moved {len(result.moved)} "
            "inbox files to processed/"
        )
    console.print(f"done in {time.perf_counter() - t0:.1f}s")


def backfill_cmd(
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD.")],
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
) -> None:
    """Build one model per day as of that day's cut-off (skips days that already have one)."""
    from datetime import date

    from pipelines.backfill_flow import backfill

    result = off_main_thread(
        backfill, date.fromisoformat(start), date.fromisoformat(end), run_config(config, work_dir)
    )
    for built in result.built:
        console.print(f"{built.day}: built {built.version}")
    for day in result.skipped:
        console.print(f"{day}: exists, skipped")


def monitor_cmd(
    metrics_url: Annotated[
        str | None, typer.Option(help="A running `kdrec serve`'s /metrics URL to check.")
    ] = None,
    max_dataset_age_days: Annotated[
        float, typer.Option(help="Alert when no new dataset version for this long.")
    ] = 2.0,
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
) -> None:
    """Health checks of the published model (the `monitor` flow's, without Prefect); exit 1 on
    an alert, with the reason."""
    from distill.studies.monitor import MonitorConfig, run_checks, summary

    cfg = run_config(config, work_dir)
    thresholds = MonitorConfig(metrics_url=metrics_url, max_dataset_age_days=max_dataset_age_days)
    checks = run_checks(cfg.work_dir, cfg.model_name, cfg.dataset.name, thresholds)
    table = Table(title=f"kdrec monitor — {cfg.model_name}")
    for col in ("check", "status", "value", "threshold", "detail"):
        table.add_column(col)
    for c in checks:
        table.add_row(c.name, c.status, c.value, c.threshold, c.detail)
    console.print(table)
    console.print(summary(checks), highlight=False)
    if any(c.ok is False for c in checks):
        raise typer.Exit(1)


def baselines_cmd(config: ConfigOpt = None, work_dir: WorkOpt = None) -> None:
    """Ingest (if needed), then fit Popularity, ItemKNN and EASE and print test metrics."""
    print_baselines(run_config(config, work_dir))


def print_baselines(cfg: RunConfig) -> None:
    from distill.evaluation.baselines import run_baselines
    from storage.datasets import ingest, load_dataset
    from storage.split import make_split

    result = ingest(cfg.dataset, work_dir=cfg.work_dir)
    dataset = load_dataset(cfg.work_dir, result.name, result.version)
    split = make_split(dataset, cutoff=cfg.split.as_of, eval_users=cfg.split.eval_users)
    rows = []
    for run in run_baselines(split):
        rows.append(
            {
                "model": run.name,
                **run.result.metrics,
                "fit s": round(run.train_seconds, 2),
                "detail": run.detail,
            }
        )
    cols = ["hr@10", "ndcg@10", "mrr", "recall@20", "fit s", "detail"]
    console.print(
        metric_table(f"Baselines on {dataset.ref} ({split.name}, test, full ranking)", rows, cols)
    )


def run_flow(cfg: RunConfig) -> DistillRun:
    from pipelines.distill_flow import distill

    return off_main_thread(distill, cfg)
