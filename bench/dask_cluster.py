"""The teacher's shard tasks on a real Dask cluster against the local runner, on ML-100K.

    python -m bench.dask_cluster [--workers 2]

Needs the default teacher of the bench work dir (`KDREC_BENCH_WORK`, else `KDREC_WORK_DIR`; built
when missing, which trains the heads). For each runner, a fresh work dir gets copies of the dataset,
the cached LM embeddings and the trained heads, but no soft labels; then the `teacher` flow scores
every shard: locally (one task at a time, torch on every core), on a real cluster (`dask scheduler`
plus `--workers` single-threaded `dask worker` processes on 127.0.0.1, reached through
`runner.dask_address`), and on Prefect-Dask's LocalCluster of the same size. Records the flow's
wall time and pairs/s, and whether every shard is byte-identical to the local run's.
Results: bench/results/dask_cluster.json.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import default_teacher, save, work_dir
from distill.teacher.cache import TeacherCache
from pipelines.config import RunConfig, RunnerConfig, load_config
from pipelines.dask_cluster import LocalProcessCluster
from pipelines.teacher_flow import run_teacher_flow
from storage.datasets import Dataset
from storage.workdir import WorkDir

ROOT = Path(__file__).resolve().parents[1]


def fresh_copy(source: Path, cache_dir: Path, target: Path) -> None:
    """Dataset, LM embeddings and teacher heads of `source`, without the soft labels."""
    src, dst = WorkDir(source), WorkDir(target)
    shutil.copytree(src.data, dst.data)
    shutil.copytree(src.embeddings, dst.embeddings)
    shutil.copytree(src.adapters, dst.adapters)
    no_labels = shutil.ignore_patterns("soft_labels")
    shutil.copytree(cache_dir, dst.teachers / cache_dir.name, ignore=no_labels)


def shard_bytes(cache_dir: Path) -> dict[str, bytes]:
    """Every committed shard (verified against its manifest hash), by file name."""
    return {p.name: p.read_bytes() for p in TeacherCache(cache_dir).store.paths()}


def one(config: RunConfig, dataset: Dataset, source: Path, cache: Path, runner: RunnerConfig,
        scratch: Path, name: str) -> tuple[dict, dict[str, bytes]]:  # fmt: skip
    work = scratch / name
    fresh_copy(source, cache, work)
    copied = Dataset(work / dataset.path.relative_to(source))
    t0 = time.perf_counter()
    result = run_teacher_flow(config.teacher, copied, None, work, runner)
    seconds = time.perf_counter() - t0
    assert not result.reused, "the copy kept soft labels"
    out = {
        "flow_seconds": round(seconds, 1),
        "pairs": result.pairs,
        "pairs_per_second": round(result.stats["pairs_per_second"]),
        "texts_encoded": result.texts_encoded,
    }
    print(name, out, flush=True)
    return out, shard_bytes(result.cache.folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    source = work_dir().resolve()
    config = load_config(ROOT / "configs" / "default.yaml", work_dir=source)
    dataset, _, cache = default_teacher(source, config)
    results: dict = {"workers": args.workers, "threads_per_worker": 1}
    with tempfile.TemporaryDirectory(prefix="kdrec-dask-bench-") as tmp:
        scratch = Path(tmp)
        local, reference = one(config, dataset, source, cache, RunnerConfig(), scratch, "local")
        runs = {"local": local}
        with LocalProcessCluster(scratch / "cluster") as cluster:
            for _ in range(args.workers):
                cluster.add_worker()
            runner = RunnerConfig(kind="dask", dask_address=cluster.address)
            runs["dask_cluster"], remote = one(
                config, dataset, source, cache, runner, scratch, "dask_cluster"
            )
        runner = RunnerConfig(kind="dask", dask_workers=args.workers)
        runs["dask_local_cluster"], in_process = one(
            config, dataset, source, cache, runner, scratch, "dask_local_cluster"
        )
    results["runs"] = runs
    results["shards"] = len(reference)
    results["identical_shards"] = {
        "dask_cluster": remote == reference,
        "dask_local_cluster": in_process == reference,
        "local_vs_source_cache": reference == shard_bytes(cache),
    }
    results["cluster_vs_local_time"] = round(
        runs["dask_cluster"]["flow_seconds"] / runs["local"]["flow_seconds"], 2
    )
    save("dask_cluster", results)


if __name__ == "__main__":
    main()
