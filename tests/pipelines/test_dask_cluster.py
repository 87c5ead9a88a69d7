"""The teacher's shard tasks on a real Dask cluster: `dask scheduler` and two `dask worker`
processes on 127.0.0.1 (random ports), not a LocalCluster."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from distill.teacher.cache import TeacherCache
from pipelines.config import RunnerConfig
from pipelines.dask_cluster import LocalProcessCluster
from pipelines.runners import ClusterError, check_workers_share
from pipelines.teacher_flow import run_teacher_flow
from tests.pipelines.test_teacher_flow import _config


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalProcessCluster]:
    started = LocalProcessCluster(tmp_path / "dask")
    try:
        yield started
    finally:
        started.stop()
        assert all(p.poll() is not None for p in started.processes)


def _shard_bytes(cache_dir: Path) -> dict[str, bytes]:
    """Every committed shard (verified against its manifest hash), by file name."""
    return {p.name: p.read_bytes() for p in TeacherCache(Path(cache_dir)).store.paths()}


def _can_unshare() -> bool:
    argv = ["unshare", "--mount", "--propagation", "private", "true"]
    try:
        return subprocess.run(argv, capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


def test_teacher_shards_on_a_real_cluster_equal_a_local_run_and_a_blind_worker_fails_fast(
    prefect_harness, synthetic, tmp_path, tiny_encoder_path, cluster
):
    dataset, _ = synthetic
    config = _config(tiny_encoder_path)
    local = run_teacher_flow(config, dataset, None, (tmp_path / "local").resolve(), RunnerConfig())
    cluster.add_worker()
    cluster.add_worker()
    remote = run_teacher_flow(
        config,
        dataset,
        None,
        (tmp_path / "remote").resolve(),
        RunnerConfig(kind="dask", dask_address=cluster.address),
    )
    executed = cluster.run(lambda dask_worker: dask_worker.state.executed_count)
    shards = _shard_bytes(remote.cache.folder)
    assert len(executed) == 2 and sum(executed.values()) >= len(shards) > 1, executed
    assert remote.fingerprint == local.fingerprint
    assert shards == _shard_bytes(local.cache.folder)  # byte for byte

    if not _can_unshare():
        pytest.skip("no mount namespaces here (unshare): the blind-worker half did not run")
    blind = tmp_path / "remote"  # this worker sees an empty filesystem at the work dir's path
    cluster.add_worker(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs tmpfs "$0" && exec "$@"', blind])  # fmt: skip
    with pytest.raises(ClusterError, match=r"1 of 3 Dask workers cannot use work_dir .*cannot see"):
        check_workers_share(cluster.address, blind)
    with pytest.raises(ClusterError, match="cannot use work_dir"):  # before any shard task
        run_teacher_flow(
            config, dataset, None, blind, RunnerConfig(kind="dask", dask_address=cluster.address)
        )
    assert not list(blind.glob(".dask-probe-*"))  # the probe cleans up after itself


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("pipelines.runners.CONNECT_TIMEOUT_S", 2)
    with pytest.raises(ClusterError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        check_workers_share("tcp://127.0.0.1:9", tmp_path)
