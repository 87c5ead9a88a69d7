"""Ctrl-C and SIGTERM during training: the command stops within 5 s, says how to resume, and
leaves no process behind (no ephemeral Prefect server, no training worker)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from storage.workdir import WorkDir
from tests.conftest import synthetic_tables, write_tables

ARGS = {
    "quality": ["quality", "--seeds", "1"],
    "run": ["run"],
    "nightly": ["nightly"],
    "backfill": ["backfill", "--start", "1970-01-02", "--end", "1970-01-02"],  # data: 1970-01-01
}
SLOW = pytest.mark.slow  # one subprocess run each: the fast suite covers `quality` only


@pytest.mark.parametrize(
    ("command", "signum"),
    [
        ("quality", signal.SIGINT),
        ("quality", signal.SIGTERM),
        pytest.param("run", signal.SIGINT, marks=SLOW),
        pytest.param("run", signal.SIGTERM, marks=SLOW),
        pytest.param("nightly", signal.SIGINT, marks=SLOW),
        pytest.param("nightly", signal.SIGTERM, marks=SLOW),
        pytest.param("backfill", signal.SIGINT, marks=SLOW),
        pytest.param("backfill", signal.SIGTERM, marks=SLOW),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_interrupt_mid_training_stops_fast_and_leaves_no_children(
    tmp_path, tiny_encoder_path, command, signum
):
    tables = synthetic_tables()
    paths = write_tables(tmp_path / "syn", tables)
    work = tmp_path / "work"
    config = {
        "work_dir": str(work),
        "dataset": {"name": "syn", "source": "files", **{k: str(v) for k, v in paths.items()}},
        "teacher": {
            "model_path": str(tiny_encoder_path),
            "users_per_shard": 8,
            "adapt": {
                "dim": 8,
                "n_heads": 2,
                "history_len": 6,
                "heads": 1,
                "loop": {"max_epochs": 2},
            },
        },
        # a long training: it is still running when the signal comes
        "student": {"dim": 8, "history_len": 6},
        "sasrec": {"dim": 8, "history_len": 6},
        "train": {"max_epochs": 100_000, "patience": 100_000, "batch_size": 8},
        "train_workers": 2,
    }
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PYTHONUNBUFFERED": "1",
    }
    if command == "nightly":  # new interactions in the inbox: the night has work to do
        inbox = work / "inbox" / "syn"
        inbox.mkdir(parents=True)
        later = tables["interactions"].with_columns(
            timestamp=tables["interactions"]["timestamp"] + 10_000
        )
        later.head(20).write_csv(inbox / "interactions-next.csv")
    kdrec = Path(sys.executable).parent / "kdrec"
    proc = subprocess.Popen(
        [str(kdrec), *ARGS[command], "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: nothing it starts can escape the check
    )
    # drain the output as it comes: a full pipe would block the command (and its signal
    # handler's message) and look like a hang
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    checkpoints = WorkDir(work).students
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("*/checkpoint.safetensors")):
        assert proc.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    assert len(tree) >= 3  # the command, the ephemeral server and training workers
    sent = time.monotonic()
    os.kill(proc.pid, signum)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"still running 5 s after {signum.name}")
    stopped = time.monotonic() - sent
    reader.join(timeout=10)
    output = "".join(lines)
    assert proc.returncode == 130 and "run the same command again to resume" in output, output
    time.sleep(0.5)
    alive = [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"]
    assert not alive, f"left behind: {alive}"
    # and nothing it started after the snapshot (a queued training job starting while the
    # running ones were stopped once outlived the command): its session is empty
    assert not _in_session(proc.pid), f"left behind: {_in_session(proc.pid)}"
    assert stopped < 5


def _in_session(sid: int) -> list[str]:
    """The live processes of session `sid` (the command started one: start_new_session)."""
    found = []
    for process in psutil.process_iter(["pid", "status", "cmdline"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != "zombie":
                found.append(f"{process.pid}: {' '.join(process.info['cmdline'] or [])[:120]}")
        except (ProcessLookupError, PermissionError):
            continue
    return found
