"""What every command shares: the console, the common options, the run config, tables."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from distill.evaluation.report.model import REPORT_METRICS, Report
from pipelines.config import RunConfig, load_config

console = Console(width=None if sys.stdout.isatty() else 120)
T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")]
ModelOpt = Annotated[str, typer.Option("--model", help="Model name in the registry.")]
WorkOpt = Annotated[Path | None, typer.Option(help="Work dir (default $KDREC_WORK_DIR or ./work).")]


def run_config(config: Path | None, work_dir: Path | None, **overrides: object) -> RunConfig:
    return load_config(config, work_dir=work_dir, **overrides)


def metric_table(title: str, rows: list[dict], columns: list[str]) -> Table:
    table = Table(title=title)
    table.add_column("model")
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        cells = [row["model"]]
        for col in columns:
            value = row.get(col)
            if isinstance(value, float):
                cells.append(
                    f"{value:.4f}" if col in REPORT_METRICS or "@" in col else f"{value:.1f}"
                )
            else:
                cells.append(str(value))
        table.add_row(*cells)
    return table


def print_report(report: Report) -> None:
    """The report as the terminal shows it: the same markdown as report.md and the UI."""
    from rich.markdown import Markdown

    from distill.evaluation.report.render import markdown

    console.print(Markdown(markdown(report)))


def off_main_thread(flow: Callable[..., T], *args: object) -> T:
    """flow(*args) on a worker thread while the main thread waits for it.

    On the main thread Prefect's flow engine swaps SIGTERM for a handler that raises inside the
    flow; the exception then unwinds through the task runner, which waits for its threads, which
    wait for the training processes: the command outlived SIGTERM (seen: about half the runs
    still going 5 s later). Only the main thread may install signal handlers, so off it the
    engine leaves `_interrupt` in charge of SIGINT and SIGTERM alike."""
    with ThreadPoolExecutor(1, thread_name_prefix="flow") as pool:
        return pool.submit(flow, *args).result()
