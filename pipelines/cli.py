"""The `kdrec` command line. Thin: parses options, calls storage/ and distill/, prints tables."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

# torch's OpenMP threads spin-wait for each other; on a busy machine that makes training 20-30x
# slower. Passive waiting must be set before torch loads (every command imports it lazily below).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402
from rich.console import Console
from rich.table import Table

from distill.report import REPORT_METRICS, Report
from pipelines.config import RunConfig, load_config
from storage.errors import KdrecError
from storage.workdir import WorkDir

if TYPE_CHECKING:
    from pipelines.distill_flow import DistillRun

app = typer.Typer(
    help="kdrec: distill a language-model teacher into a lightweight recommender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Ingest and inspect datasets.", no_args_is_help=True)
teacher_app = typer.Typer(help="Run and inspect the teacher stage.", no_args_is_help=True)
models_app = typer.Typer(help="Published models: list, show, rollback.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(teacher_app, name="teacher")
app.add_typer(models_app, name="models")
console = Console(width=None if sys.stdout.isatty() else 120)
T = TypeVar("T")

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML run config.")]
ModelOpt = Annotated[str, typer.Option("--model", help="Model name in the registry.")]
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
            if isinstance(value, float):
                cells.append(
                    f"{value:.4f}" if col in REPORT_METRICS or "@" in col else f"{value:.1f}"
                )
            else:
                cells.append(str(value))
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


def print_report(report: Report) -> None:
    """The report as the terminal shows it: the same markdown as report.md and the UI."""
    from rich.markdown import Markdown

    from distill.report import markdown

    console.print(Markdown(markdown(report)))


def _run_flow(cfg: RunConfig) -> DistillRun:
    from pipelines.distill_flow import distill

    return _off_main_thread(distill, cfg)


def _off_main_thread(flow: Callable[..., T], *args: object) -> T:
    """flow(*args) on a worker thread while the main thread waits for it.

    On the main thread Prefect's flow engine swaps SIGTERM for a handler that raises inside the
    flow; the exception then unwinds through the task runner, which waits for its threads, which
    wait for the training processes: the command outlived SIGTERM (seen: about half the runs
    still going 5 s later). Only the main thread may install signal handlers, so off it the
    engine leaves `_interrupt` in charge of SIGINT and SIGTERM alike."""
    with ThreadPoolExecutor(1, thread_name_prefix="flow") as pool:
        return pool.submit(flow, *args).result()


@app.command("run")
def run_cmd(
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
    seeds: Annotated[int | None, typer.Option(help="Students per arm (seeds 0..N-1).")] = None,
    force: Annotated[
        bool, typer.Option(help="Publish even if the regression gate refuses.")
    ] = False,
) -> None:
    """Run the whole pipeline (ingest, teacher, students, report, publish) as a Prefect flow."""
    cfg = _config(config, work_dir)
    updates: dict = {"force_publish": force or cfg.force_publish}
    if seeds:
        updates["seeds"] = list(range(seeds))
    cfg = cfg.model_copy(update=updates)
    t0 = time.perf_counter()
    result = _run_flow(cfg)
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
    from distill.recommend import Recommender
    from storage.datasets import load_dataset

    rec = Recommender.load(WorkDir(cfg.work_dir).registry, cfg.model_name, work_dir=cfg.work_dir)
    user = load_dataset(cfg.work_dir, cfg.dataset.name).users().get_column("user_id")[0]
    table = Table(title=f"sample: top 5 for user {user}")
    for col in ("item", "title", "score"):
        table.add_column(col)
    for r in rec.recommend(user, 5, fallback="popular"):
        table.add_row(r.item_id, r.title, f"{r.score:.3f}")
    console.print(table)


@app.command("nightly")
def nightly_cmd(config: ConfigOpt = None, work_dir: WorkOpt = None) -> None:
    """Run the nightly flow now: ingest the inbox, re-distill what changed, publish via the gate."""
    from pipelines.nightly_flow import nightly

    t0 = time.perf_counter()
    result = _off_main_thread(nightly, _config(config, work_dir))
    if result.run is None:
        console.print("inbox empty: no teacher work, nothing trained, nothing published")
    else:
        console.print(
            f"publish: {result.run.publish.reason}; moved {len(result.moved)} "
            "inbox files to processed/"
        )
    console.print(f"done in {time.perf_counter() - t0:.1f}s")


@app.command("monitor")
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
    from distill.monitor import MonitorConfig, run_checks, summary

    cfg = _config(config, work_dir)
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


@app.command("backfill")
def backfill_cmd(
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option(help="Last day, YYYY-MM-DD.")],
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
) -> None:
    """Build one model per day as of that day's cut-off (skips days that already have one)."""
    from datetime import date

    from pipelines.backfill_flow import backfill

    result = _off_main_thread(
        backfill, date.fromisoformat(start), date.fromisoformat(end), _config(config, work_dir)
    )
    for built in result.built:
        console.print(f"{built.day}: built {built.version}")
    for day in result.skipped:
        console.print(f"{day}: exists, skipped")


@app.command("quality")
def quality_cmd(
    seeds: Annotated[int, typer.Option(help="Seeds per student arm.")] = 5,
    config: ConfigOpt = None,
    work_dir: WorkOpt = None,
) -> None:
    """Train every report arm N times (plain SASRec, undistilled and distilled students); print
    mean ± std and the paired tests against the best plain model. Publishes nothing."""
    cfg = _config(config, work_dir)
    cfg = cfg.model_copy(update={"seeds": list(range(seeds)), "publish": False})
    result = _run_flow(cfg)
    print_report(result.report)
    console.print(f"report: {result.run_dir.report_md}")


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

    cfg = _config(config, work_dir)
    result = ingest(cfg.dataset, work_dir=cfg.work_dir)
    dataset = load_dataset(cfg.work_dir, result.name, result.version)
    if local:
        split = make_split(dataset, cutoff=cfg.split.as_of, eval_users=cfg.split.eval_users)
        run = run_teacher(cfg.teacher, dataset, split, work_dir=cfg.work_dir)
    else:
        run = _off_main_thread(
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
    from distill.teacher.stage import repair

    cfg = _config(None, work_dir)
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

    cfg = _config(None, work_dir)
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


@models_app.command("list")
def models_list(model: ModelOpt = "kdrec", work_dir: WorkOpt = None) -> None:
    """Published versions, newest last; * marks CURRENT."""
    from storage.registry import Registry

    registry = Registry(WorkDir(_config(None, work_dir).work_dir).registry, model)
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

    bundle = Registry(WorkDir(_config(None, work_dir).work_dir).registry, model).bundle(version)
    console.print_json(dumps_json(bundle.manifest))


@models_app.command("rollback")
def models_rollback(
    version: Annotated[str, typer.Argument(help="Version to make current.")],
    model: ModelOpt = "kdrec",
    work_dir: WorkOpt = None,
) -> None:
    """Point CURRENT at an earlier (verified) version."""
    from storage.registry import Registry

    bundle = Registry(WorkDir(_config(None, work_dir).work_dir).registry, model).rollback(version)
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
    from distill.cold_items import extend_published
    from storage.datasets import read_new_items
    from storage.registry import Registry

    cfg = _config(config, work_dir)
    frame = read_new_items(items, cfg.dataset)
    registry = Registry(WorkDir(cfg.work_dir).registry, model)
    extension = extend_published(registry, frame, cfg.teacher, cfg.work_dir, force=force)
    added, result = extension.added, extension.publish
    verb = "published" if result.published else "NOT published"
    console.print(f"{added} new items; {verb} {result.version or ''} ({result.reason})")
    if not result.published:
        raise typer.Exit(1)


@app.command("recommend")
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
    from distill.recommend import Recommender

    work = _config(None, work_dir).work_dir
    rec = Recommender.load(WorkDir(work).registry, model, version, work_dir=work)
    table = Table(title=f"top {k} for user {user} ({rec.path.name})")
    for col in ("#", "item", "title", "score"):
        table.add_column(col)
    for i, r in enumerate(
        rec.recommend(user, k, exclude_seen=not include_seen, fallback=fallback), start=1
    ):
        table.add_row(str(i), r.item_id, r.title, f"{r.score:.3f}")
    console.print(table)


@app.command("serve")
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

    work = _config(None, work_dir).work_dir
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


def _interrupt(signum: int, frame: object) -> None:
    """Stop now: Prefect's engine can swallow a KeyboardInterrupt raised inside its own frames
    (seen: the flow marked Crashed while training went on), so the handler does the cleanup and
    exits itself. Everything on disk is written atomically, so a re-run resumes."""
    _stop_children()  # first: printing can block (a full pipe), stopping must not wait on it
    console.print(
        f"interrupted ({signal.Signals(signum).name}): finished shards and student checkpoints "
        "are kept; run the same command again to resume"
    )
    sys.stdout.flush()
    os._exit(130)


def _stop_children() -> None:
    """Terminate any process this one started that is still running (a belt to the braces of
    the context managers: an ephemeral server or a worker must not outlive the command)."""
    import psutil

    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    _, alive = psutil.wait_procs(children, timeout=2)
    for child in alive:
        child.kill()


def own_settings(argv: list[str], environ: dict[str, str]) -> dict[str, str]:
    """The environment kdrec needs, whoever starts it (not only the Makefile): offline models
    and data, Prefect's state in the work dir (`--work-dir`, else $KDREC_WORK_DIR, else ./work)
    with analytics off (its telemetry heartbeat otherwise prints a "database is locked"
    traceback) and a start-up timeout a busy 2-core machine can meet. Values already set win."""
    work = environ.get("KDREC_WORK_DIR", "work")
    for i, arg in enumerate(argv):
        if arg == "--work-dir" and i + 1 < len(argv):
            work = argv[i + 1]
        elif arg.startswith("--work-dir="):
            work = arg.split("=", 1)[1]
    wanted = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PREFECT_HOME": str(Path(work).resolve() / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    return {k: v for k, v in wanted.items() if k not in environ}


def main() -> None:
    os.environ.update(own_settings(sys.argv[1:], dict(os.environ)))  # before Prefect loads
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for name in ("distill", "storage", "pipelines"):  # ours at INFO; libraries stay quiet
        logging.getLogger(name).setLevel(logging.INFO)
    if os.environ.get("PREFECT_HOME"):  # Prefect does not create missing parent folders
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    # Ctrl-C and SIGTERM stop the ephemeral Prefect server and training workers with the command
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        app()
    except KdrecError as exc:  # the user can fix it; anything else is a bug: traceback, exit 1
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
