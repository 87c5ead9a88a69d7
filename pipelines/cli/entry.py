"""`kdrec`: the commands composed into one app, kdrec's own settings, signals and exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import typer
import yaml

from pipelines.cli import runs, serving
from pipelines.cli.common import console
from pipelines.cli.data import data_app
from pipelines.cli.models import models_app
from pipelines.cli.teacher import teacher_app
from storage.errors import KdrecError
from storage.paths import absolute

app = typer.Typer(
    help="kdrec: distill a language-model teacher into a lightweight recommender.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("run")(runs.run_cmd)
app.command("quality")(runs.quality_cmd)
app.command("nightly")(runs.nightly_cmd)
app.command("backfill")(runs.backfill_cmd)
app.command("monitor")(runs.monitor_cmd)
app.command("baselines")(runs.baselines_cmd)
app.add_typer(data_app, name="data")
app.add_typer(teacher_app, name="teacher")
app.add_typer(models_app, name="models")
app.command("recommend")(serving.recommend_cmd)
app.command("serve")(serving.serve_cmd)


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
    and data, Prefect's state in the run's work dir (as the run config will resolve it:
    `--work-dir`, else the config file's `work_dir`, else $KDREC_WORK_DIR, else ./work) with
    analytics off (its telemetry heartbeat otherwise prints a "database is locked" traceback)
    and a start-up timeout a busy 2-core machine can meet. Values already set win."""
    work = _option(argv, "--work-dir") or _config_work_dir(_option(argv, "--config", "-c"))
    work = work or environ.get("KDREC_WORK_DIR", "work")
    wanted = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PREFECT_HOME": str(absolute(work) / ".prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    }
    return {k: v for k, v in wanted.items() if k not in environ}


def _option(argv: list[str], *names: str) -> str | None:
    """The value of the last `--name value` / `--name=value` in argv (before typer parses it)."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(f"{name}="):
                value = arg.split("=", 1)[1]
    return value


def _config_work_dir(config: str | None) -> str | None:
    """The config file's `work_dir`, taken from the file's folder as `load_config` takes it;
    None when there is none or the file cannot be read (the command then reports it)."""
    if config is None:
        return None
    try:
        with open(config) as f:
            work = (yaml.safe_load(f) or {}).get("work_dir")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    if not isinstance(work, str):
        return None
    return str(absolute(work, anchor=absolute(config).parent))


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
