"""Helpers shared by the benchmark scripts: the ML-100K dataset, timing, JSON results."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import torch

from distill.teacher.cache import TeacherCache
from distill.teacher.stage import run_teacher
from pipelines.config import RunConfig
from storage.atomic import atomic_write_json
from storage.datasets import Dataset, DatasetConfig, ingest, load_dataset
from storage.split import Split, make_split

RESULTS = Path(__file__).parent / "results"


def work_dir() -> Path:
    return Path(os.environ.get("KDREC_BENCH_WORK", os.environ.get("KDREC_WORK_DIR", "work")))


def flow_settings() -> None:
    """Before Prefect loads: kdrec's own settings for flows run from a study, with Prefect's
    home in the study's work dir (`kdrec` run directly does the same for its --work-dir)."""
    from pipelines.cli import own_settings

    os.environ.update(own_settings(["--work-dir", str(work_dir())], dict(os.environ)))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)


def movielens(work: Path):
    result = ingest(DatasetConfig(), work_dir=work)
    dataset = load_dataset(work, result.name, result.version)
    return dataset, make_split(dataset)


@contextmanager
def timer(out: dict, key: str):
    t0 = time.perf_counter()
    yield
    out[key] = time.perf_counter() - t0


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# what the benchmarks write: changed by a study itself, they say nothing of the code it ran
OUTPUTS = ("bench/results", "docs/img")


def git_commit(root: Path = Path(__file__).resolve().parents[1]) -> str:
    """The commit the code ran at (+ "-dirty" with uncommitted changes to tracked files other
    than the benchmarks' own outputs: a study that runs in several invocations, or writes its
    plot before its JSON, changes those itself)."""
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    outside = [f":(exclude){path}" for path in OUTPUTS]
    dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", ".", *outside], cwd=root)
    return (head or "unknown") + ("-dirty" if dirty.returncode != 0 else "")


def argv_in_repo(argv: list[str] | None = None) -> list[str]:
    """The command line with every path inside the repository relative to it (a result records
    how to run it again anywhere, never this machine's folders)."""
    root = Path(__file__).resolve().parents[1]
    out = []
    for arg in sys.argv if argv is None else argv:
        path = Path(arg)
        if path.is_absolute() and path.resolve().is_relative_to(root):
            arg = str(path.resolve().relative_to(root))
        out.append(arg)
    return out


def save(name: str, results: dict) -> Path:
    """bench/results/<name>.json: the results with what made them (commit, command line,
    machine, time)."""
    path = RESULTS / f"{name}.json"
    atomic_write_json(
        path,
        {
            "benchmark": name,
            "created_at": datetime.now(UTC).isoformat(),
            "git_commit": git_commit(),
            "argv": argv_in_repo(),
            "machine": machine(),
            **results,
        },
    )
    print(json.dumps(results, indent=2, default=str))
    return path


def default_teacher(work: Path, config: RunConfig) -> tuple[Dataset, Split, TeacherCache]:
    """ML-100K, its split and the teacher cache for `config.teacher` (built when missing)."""
    dataset, split = movielens(work)
    run = run_teacher(config.teacher, dataset, split, work_dir=work, progress=False)
    return dataset, split, run.cache
