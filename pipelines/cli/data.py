"""`kdrec data`: ingest and inspect datasets."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import ConfigOpt, WorkOpt, console, run_config

data_app = typer.Typer(help="Ingest and inspect datasets.", no_args_is_help=True)


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

    cfg = run_config(config, work_dir)
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

    cfg = run_config(None, work_dir)
    console.print_json(dumps_json(load_dataset(cfg.work_dir, name, version).meta))
