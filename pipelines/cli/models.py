"""`kdrec models`: published models (list, show, rollback, extend with new items)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import ConfigOpt, ModelOpt, WorkOpt, console, run_config
from storage.workdir import WorkDir

models_app = typer.Typer(
    help="Published models: list, show, rollback, extend.", no_args_is_help=True
)


@models_app.command("list")
def models_list(model: ModelOpt = "kdrec", work_dir: WorkOpt = None) -> None:
    """Published versions, newest last; * marks CURRENT."""
    from storage.registry import Registry

    registry = Registry(WorkDir(run_config(None, work_dir).work_dir).registry, model)
    current = registry.current_version()
    table = Table(title=f"model {model}")
    for col in ("", "version", "dataset", "valid NDCG@10", "gate"):
        table.add_column(col)
    for version in registry.versions():
        manifest = registry.bundle(version).manifest
        table.add_row(
            "*" if version == current else "",
            version,
            manifest.get("dataset", ""),
            f"{manifest.get('validation', {}).get('ndcg@10', float('nan')):.4f}",
            manifest.get("gate", ""),
        )
    console.print(table)


@models_app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="Version or 'current'.")] = "current",
    model: ModelOpt = "kdrec",
    work_dir: WorkOpt = None,
) -> None:
    """Print a version's manifest."""
    from storage.atomic import dumps_json
    from storage.registry import Registry

    bundle = Registry(WorkDir(run_config(None, work_dir).work_dir).registry, model).bundle(version)
    console.print_json(dumps_json(bundle.manifest))


@models_app.command("rollback")
def models_rollback(
    version: Annotated[str, typer.Argument(help="Version to make current.")],
    model: ModelOpt = "kdrec",
    work_dir: WorkOpt = None,
) -> None:
    """Point CURRENT at an earlier (verified) version."""
    from storage.registry import Registry

    registry = Registry(WorkDir(run_config(None, work_dir).work_dir).registry, model)
    bundle = registry.rollback(version)
    console.print(f"CURRENT -> {bundle.version}")


@models_app.command("extend")
def models_extend(
    items: Annotated[
        Path, typer.Option(help="Items file (.parquet/.csv/.tsv): item_id, title, [year, genres].")
    ],
    config: ConfigOpt = None,
    model: ModelOpt = "kdrec",
    force: Annotated[bool, typer.Option(help="Publish even if the gate refuses.")] = False,
    work_dir: WorkOpt = None,
) -> None:
    """Add items that arrived after training (e.g. the nightly inbox's items file) to the current
    model without retraining: the teacher LM encodes their texts and the bundle's content path
    (the content tower of the default student, or a student's text projection) places them.
    Publishes a new version through the regression gate."""
    from distill.serving.cold_items import extend_published
    from storage.datasets import read_new_items
    from storage.registry import Registry

    cfg = run_config(config, work_dir)
    frame = read_new_items(items, cfg.dataset)
    registry = Registry(WorkDir(cfg.work_dir).registry, model)
    extension = extend_published(registry, frame, cfg.teacher, cfg.work_dir, force=force)
    added, result = extension.added, extension.publish
    verb = "published" if result.published else "NOT published"
    console.print(f"{added} new items; {verb} {result.version or ''} ({result.reason})")
    if not result.published:
        raise typer.Exit(1)
