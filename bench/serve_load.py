"""Load on `kdrec serve` while CURRENT swaps: latency, throughput and failures, 1 and 2 workers.

    python -m bench.serve_load [--registry work/registry] [--requests 3000] [--swaps 10]

Copies the newest published bundle(s) of the registry into a temp registry (two versions: the two
newest, or the newest and a byte copy of it under a second name, so every swap loads and verifies a
whole bundle), starts `kdrec serve` on 127.0.0.1, and sends a fixed number of requests from a few
client threads: 80 % GET /recommend for random known users, 20 % POST /recommend with a random
10-item history. Meanwhile it alternates CURRENT `--swaps` times (a rollback each time), spread
over the run. Every non-200 answer and every transport error counts as a failure. Results:
bench/results/serve.json. The client runs on the same cores as the server, so the throughput is a
floor, not a capacity figure.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl

from bench.common import save
from storage.registry import Registry
from storage.workdir import WorkDir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_registry(source: Registry, target: Path) -> tuple[Registry, list[str]]:
    """A temp registry holding two versions to alternate between."""
    versions = source.versions()[-2:]
    if not versions:
        raise SystemExit(f"no published model in {source.root}; run `make run` first")
    copy = Registry(target, source.model)
    copy.root.mkdir(parents=True)
    for version in versions:
        shutil.copytree(source.root / version, copy.root / version)
    if len(versions) == 1:
        twin = versions[0] + "-copy"
        shutil.copytree(source.root / versions[0], copy.root / twin)
        versions.append(twin)
    copy.rollback(versions[0])
    return copy, versions


def wait_healthy(client: httpx.Client, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"kdrec serve exited: {proc.stdout.read()}")
        try:
            if client.get("/health").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("kdrec serve did not become healthy")


def load(
    registry: Registry,
    versions: list[str],
    *,
    workers: int,
    requests: int,
    swaps: int,
    clients: int,
    max_seconds: float,
) -> dict:
    bundle = registry.bundle(versions[0]).path
    users = pl.read_parquet(bundle / "users.parquet", columns=["user_id"])["user_id"].to_list()
    items = pl.read_parquet(bundle / "items.parquet", columns=["item_id"])["item_id"].to_list()
    port = free_port()
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--registry", str(registry.root.parent)]
    cmd += ["--port", str(port), "--workers", str(workers), "--reload-seconds", "0.5"]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    latencies: list[float] = []
    failures: list[str] = []
    done = 0
    lock = threading.Lock()
    try:
        with httpx.Client(base_url=base, timeout=10) as probe:
            wait_healthy(probe, proc)
        stop_at = time.monotonic() + max_seconds

        def client(seed: int) -> None:
            nonlocal done
            rng = random.Random(seed)
            with httpx.Client(base_url=base, timeout=10) as http:
                while time.monotonic() < stop_at:
                    with lock:
                        if done >= requests:
                            return
                        done += 1
                    t0 = time.perf_counter()
                    try:
                        if rng.random() < 0.8:
                            r = http.get("/recommend", params={"user": rng.choice(users)})
                        else:
                            body = {"history": rng.sample(items, 10), "k": 10}
                            r = http.post("/recommend", json=body)
                        ok, why = r.status_code == 200, f"{r.status_code} {r.text[:100]}"
                    except httpx.HTTPError as exc:
                        ok, why = False, repr(exc)
                    elapsed = time.perf_counter() - t0
                    with lock:
                        latencies.append(elapsed)
                        if not ok:
                            failures.append(why)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        swapped = 0
        while swapped < swaps and any(t.is_alive() for t in threads):
            with lock:
                progress = done / requests
            if progress >= (swapped + 1) / (swaps + 1):
                swapped += 1
                registry.rollback(versions[swapped % 2])
            time.sleep(0.01)
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        with httpx.Client(base_url=base, timeout=10) as probe:
            served = probe.get("/health").json()["version"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    ms = np.asarray(latencies) * 1000
    return {
        "workers": workers,
        "clients": clients,
        "requests": len(latencies),
        "failed": len(failures),
        "failures": failures[:10],
        "swaps": swapped,
        "final_version_served": served,
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", type=Path, default=None, help="default: the work dir's")
    parser.add_argument("--model", default="kdrec")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    work = Path(os.environ.get("KDREC_WORK_DIR", "work"))
    source = Registry(args.registry or WorkDir(work).registry, args.model)
    runs = []
    with tempfile.TemporaryDirectory(prefix="kdrec-serve-load-") as tmp:
        for workers in args.workers:
            registry, versions = copy_registry(source, Path(tmp) / f"w{workers}")
            result = load(
                registry,
                versions,
                workers=workers,
                requests=args.requests,
                swaps=args.swaps,
                clients=args.clients,
                max_seconds=args.max_seconds,
            )
            print(result, flush=True)
            runs.append(result)
    path = save(
        "serve",
        {
            "command": "python -m bench.serve_load " + " ".join(sys.argv[1:]),
            "bundle": source.bundle().version,
            "mix": "80% GET /recommend?user, 20% POST /recommend (10-item history), k=10",
            "runs": runs,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
