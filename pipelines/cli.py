"""The `kdrec` command line. Thin: parses options, calls storage/ and distill/, prints tables."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipelines.config import RunConfig, load_config
from storage.errors import DataError, IntegrityError

app = typer.Typer(
    help="kdrec: distill a language-model teacher into a lightweight recommender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Ingest and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")]
WorkOpt = Annotated[Path | None, typer.Option(help="Work dir (default $KDREC_WORK_DIR or ./work).")]


def _config(config: Path | None, work_dir: Path | None, **overrides: object) -> RunConfig:
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
            cells.append(f"{value:.4f}" if isinstance(value, float) else str(value))
        table.add_row(*cells)
    return table


@data_app.command("ingest")
def data_ingest(
    source: Annotated[str, typer.Argument(help="'movielens-100k' (embedded) or 'files'.")] = "",
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
    name: Annotated[str | None, typer.Option(help="Dataset name (folder under data/).")] = None,
    interactions: Annotated[Path | None, typer.Option(help="files: interactions file.")] = None,
    items: Annotated[Path | None, typer.Option(help="files: items file.")] = None,
    users: Annotated[Path | None, typer.Option(help="files: users file (optional).")] = None,
    column: Annotated[
        list[str] | None,
        typer.Option(help="files: canonical=source column mapping, repeatable (e.g. item_id=sku)."),
    ] = None,
) -> None:
    """Validate, normalise and write a dataset version (a no-op if the content is unchanged)."""
    from storage.datasets import ingest

    cfg = _config(config, work_dir)
    ds = cfg.dataset.model_dump()
    if source:
        ds["source"] = source
    for key, value in (
        ("name", name),
        ("interactions", interactions),
        ("items", items),
        ("users", users),
    ):
        if value is not None:
            ds[key] = value
    if column:
        ds["columns"] = dict(c.split("=", 1) for c in column)
    cfg = cfg.model_copy(update={"dataset": type(cfg.dataset).model_validate(ds)})
    t0 = time.perf_counter()
    result = ingest(cfg.dataset, work_dir=cfg.work_dir)
    verb = "wrote" if result.created else "unchanged, kept"
    console.print(
        f"{verb} {result.name}@{result.version} at {result.path} ({time.perf_counter() - t0:.2f}s)"
    )


@data_app.command("show")
def data_show(
    name: Annotated[str, typer.Argument(help="Dataset name.")] = "movielens-100k",
    version: Annotated[str, typer.Option(help="Version or 'latest'.")] = "latest",
    work_dir: WorkOpt = None,
) -> None:
    """Print a dataset version's summary (rows, hashes, source)."""
    from storage.atomic import dumps_json
    from storage.datasets import load_dataset

    cfg = _config(None, work_dir)
    console.print_json(dumps_json(load_dataset(cfg.work_dir, name, version).meta))


@app.command("baselines")
def baselines_cmd(config: ConfigOpt = None, work_dir: WorkOpt = None) -> None:
    """Ingest (if needed), then fit Popularity, ItemKNN and EASE and print test metrics."""
    print_baselines(_config(config, work_dir))


def print_baselines(cfg: RunConfig) -> None:
    from distill.baselines import run_baselines
    from storage.datasets import ingest, load_dataset
    from storage.split import make_split

    result = ingest(cfg.dataset, work_dir=cfg.work_dir)
    dataset = load_dataset(cfg.work_dir, result.name, result.version)
    split = make_split(dataset, cutoff=cfg.split.as_of)
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


@app.command("run")
def run_cmd(config: ConfigOpt = None, work_dir: WorkOpt = None) -> None:
    """Run the pipeline on the configured dataset (default: embedded MovieLens-100K)."""
    print_baselines(_config(config, work_dir))


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app()
    except (DataError, IntegrityError, FileNotFoundError, ValueError) as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
