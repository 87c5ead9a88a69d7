"""`kdrec recommend` and `kdrec serve`: the published model, from the terminal and over HTTP."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import ModelOpt, WorkOpt, console, run_config
from storage.workdir import WorkDir


def recommend_cmd(
    user: Annotated[str, typer.Option("--user", "-u", help="User id.")],
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    model: ModelOpt = "kdrec",
    version: Annotated[str, typer.Option(help="Version or 'current'.")] = "current",
    fallback: Annotated[
        str | None, typer.Option(help="'popular': recommend popular items to unknown users.")
    ] = None,
    include_seen: Annotated[bool, typer.Option(help="Also recommend seen items.")] = False,
    work_dir: WorkOpt = None,
) -> None:
    """Print the top-k items for a user from a published model."""
    from distill.serving.recommend import Recommender

    work = run_config(None, work_dir).work_dir
    rec = Recommender.in_work_dir(work, model, version)
    table = Table(title=f"top {k} for user {user} ({rec.path.name})")
    for col in ("#", "item", "title", "score"):
        table.add_column(col)
    for i, r in enumerate(
        rec.recommend(user, k, exclude_seen=not include_seen, fallback=fallback), start=1
    ):
        table.add_row(str(i), r.item_id, r.title, f"{r.score:.3f}")
    console.print(table)


def serve_cmd(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default 127.0.0.1; other hosts warn without a token)."),
    ] = None,
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads CURRENT).")] = 1,
    registry: Annotated[
        Path | None, typer.Option(help="Registry folder (default: the work dir's registry).")
    ] = None,
    model: ModelOpt = "kdrec",
    reload_seconds: Annotated[
        float, typer.Option(help="How often CURRENT is checked for a new version.")
    ] = 2.0,
    max_k: Annotated[int, typer.Option(help="The largest k a request may ask for.")] = 1000,
    index: Annotated[
        str, typer.Option(help="exact (float32) or sq8 (the bundle's int8 index).")
    ] = "exact",
    tower: Annotated[
        str,
        typer.Option(
            help="float32 or int8: the user tower that encodes POSTed histories (known users are "
            "served from the bundle's stored vectors)."
        ),
    ] = "float32",
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    work_dir: WorkOpt = None,
) -> None:
    """Serve the published model over HTTP, reloading it when CURRENT changes.

    Endpoints: GET /recommend?user=&k=, POST /recommend {"history": [...], "k": N},
    GET /similar?item=, GET /explain?user=&item=, GET /health, GET /metrics (Prometheus).
    Set KDREC_API_TOKEN to require `Authorization: Bearer <token>` on all but /health.
    """
    from pipelines.serve import ServeSettings, serve

    work = run_config(None, work_dir).work_dir
    root = registry or WorkDir(work).registry
    settings = ServeSettings(
        registry=root.resolve(),
        work_dir=Path(work).resolve(),
        model=model,
        reload_seconds=reload_seconds,
        max_k=max_k,
        index=index,
        tower=tower,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to this handler
    signal.signal(signal.SIGINT, _served)
    signal.signal(signal.SIGTERM, _served)
    serve(settings, host=host, port=port, workers=workers, log_level=log_level)


def _served(signum: int, frame: object) -> None:
    console.print(f"kdrec serve stopped ({signal.Signals(signum).name})")
    raise SystemExit(0)
