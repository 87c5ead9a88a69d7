"""`kdrec teacher`: run, repair and inspect the teacher stage."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import ConfigOpt, WorkOpt, console, off_main_thread, run_config
from storage.workdir import WorkDir

teacher_app = typer.Typer(help="Run and inspect the teacher stage.", no_args_is_help=True)


@teacher_app.command("run")
def teacher_run(
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
    local: Annotated[bool, typer.Option(help="Run in this process, without Prefect.")] = False,
) -> None:
    """Run the teacher stage (a no-op when its cache is complete)."""
    from distill.teacher.stage import run_teacher
    from pipelines.teacher_flow import run_teacher_flow
    from storage.datasets import ingest, load_dataset
    from storage.split import make_split

    cfg = run_config(config, work_dir)
    result = ingest(cfg.dataset, work_dir=cfg.work_dir)
    dataset = load_dataset(cfg.work_dir, result.name, result.version)
    if local:
        split = make_split(dataset, cutoff=cfg.split.as_of, eval_users=cfg.split.eval_users)
        run = run_teacher(cfg.teacher, dataset, split, work_dir=cfg.work_dir)
    else:
        run = off_main_thread(
            run_teacher_flow,
            cfg.teacher,
            dataset,
            cfg.split.as_of,
            cfg.work_dir.resolve(),
            cfg.runner,
            cfg.split.eval_users,
        )
    summary = run.summary()
    console.print(f"teacher cache: {summary['cache_dir']}")
    console.print({k: round(v, 2) if isinstance(v, float) else v for k, v in summary.items()})


@teacher_app.command("repair")
def teacher_repair(work_dir: WorkOpt = None) -> None:
    """Verify every committed teacher shard; recompute only missing or damaged ones."""
    from distill.teacher.cache import TeacherCache
    from distill.teacher.labels import repair

    cfg = run_config(None, work_dir)
    for cache in TeacherCache.all(cfg.work_dir):
        if cache.is_complete():
            fixed = repair(cache.folder, work_dir=cfg.work_dir)
            console.print(
                f"{cache.folder.name}: " + (f"recomputed {fixed}" if fixed else "all shards intact")
            )


@teacher_app.command("status")
def teacher_status(work_dir: WorkOpt = None) -> None:
    """List teacher caches: fingerprint, shards done, size, quality."""
    from distill.teacher.cache import TeacherCache

    cfg = run_config(None, work_dir)
    table = Table(title=f"teacher caches in {WorkDir(cfg.work_dir).teachers}")
    for col in ("fingerprint", "kind", "dataset", "shards", "complete", "MB", "NDCG@10"):
        table.add_column(col)
    for cache in TeacherCache.all(cfg.work_dir):
        status = cache.status()
        table.add_row(
            status.fingerprint,
            status.kind,
            status.dataset,
            f"{status.shards_done}/{status.shards}",
            "yes" if status.complete else "no",
            f"{status.bytes / 1e6:.1f}",
            f"{status.test_ndcg:.4f}",
        )
    console.print(table)
