"""`kdrec serve` as a real process on 127.0.0.1: auth, every endpoint, 4xx for bad input, metrics,
hot reload on publish and rollback, and a broken bundle that is never swapped in."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pipelines.serve import bind_host
from storage.atomic import atomic_write_text
from storage.registry import Registry

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 60.0, what: str = "condition"):
    """check()'s first truthy result; a refused connection (server starting) counts as falsy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
        except httpx.TransportError:
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def server(published, tmp_path_factory):
    """A server on a copy of the published registry, with a token and a 0.2 s reload poll."""
    registry = tmp_path_factory.mktemp("serve") / "registry"
    shutil.copytree(published["registry"], registry)
    port = free_port()
    env = {**os.environ, "KDREC_API_TOKEN": TOKEN}
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)]
    cmd += ["--registry", str(registry), "--reload-seconds", "0.2", "--max-k", "50"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_until(
            lambda: proc.poll() is not None or client.get("/health").status_code == 200,
            what="the server to start",
        )
        assert proc.poll() is None, proc.stdout.read()
        yield client, Registry(registry, "kdrec"), published
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


def test_health_is_open_and_names_the_model(server):
    client, registry, published = server
    health = client.get("/health").json()
    assert health["version"] == published["versions"]["sequential"] == registry.current_version()
    assert health["dataset"] == published["dataset"].ref
    assert health["last_reload_error"] is None


@pytest.mark.parametrize(
    "path", ["/recommend?user=u1", "/similar?item=i1", "/explain?user=u1&item=i2", "/metrics"]
)
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_every_endpoint_but_health_needs_the_token(server, path, headers):
    client, _, _ = server
    response = client.get(path, headers=headers)
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert client.post("/recommend", json={"history": ["i1"]}, headers=headers).status_code == 401


def test_recommend_similar_and_explain(server):
    client, _, _ = server
    recs = client.get("/recommend", params={"user": "u3", "k": 4}, headers=AUTH).json()
    assert len(recs["items"]) == 4 and {"item_id", "title", "score"} <= set(recs["items"][0])
    history = client.post("/recommend", json={"history": ["i1", "i2"], "k": 3}, headers=AUTH)
    assert history.status_code == 200
    assert len(history.json()["items"]) == 3
    assert not {"i1", "i2"} & {r["item_id"] for r in history.json()["items"]}
    similar = client.get("/similar", params={"item": "i5", "k": 3}, headers=AUTH).json()
    assert len(similar["items"]) == 3 and "i5" not in {r["item_id"] for r in similar["items"]}
    top = recs["items"][0]["item_id"]
    explained = client.get("/explain", params={"user": "u3", "item": top}, headers=AUTH).json()
    assert explained["item_id"] == top and explained["contributions"]
    popular = client.get("/recommend", params={"user": "new", "fallback": "popular"}, headers=AUTH)
    assert popular.status_code == 200 and len(popular.json()["items"]) == 10


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "says"),
    [
        ("GET", "/recommend?user=nobody", None, 404, "unknown user id 'nobody'"),
        ("GET", "/recommend?user=u1&k=0", None, 422, "greater than or equal to 1"),
        ("GET", "/recommend?user=u1&k=51", None, 422, "less than or equal to 50"),
        ("GET", "/recommend?user=u1&k=ten", None, 422, "valid integer"),
        ("GET", "/recommend?user=u1&fallback=random", None, 400, "fallback must be 'popular'"),
        ("GET", "/similar?item=nope", None, 404, "unknown item id"),
        ("GET", "/explain?user=u1&item=nope", None, 404, "unknown item id"),
        ("GET", "/explain?user=nobody&item=i1", None, 404, "unknown user id"),
        ("POST", "/recommend", {"history": ["i1", "zz"]}, 400, "1 unknown item id"),
        ("POST", "/recommend", {"history": []}, 400, "history is empty"),
        ("POST", "/recommend", {"history": ["i1"], "k": 0}, 422, "greater than or equal to 1"),
        ("POST", "/recommend", {"history": ["i1"], "k": 51}, 422, "at most 50"),
        ("POST", "/recommend", {"k": 3}, 422, "history"),
        ("POST", "/recommend", b"{not json", 422, "JSON decode error"),
    ],
)
def test_bad_input_is_a_clear_4xx(server, method, path, body, status, says):
    client, _, _ = server
    if isinstance(body, bytes):
        headers = {**AUTH, "Content-Type": "application/json"}
        response = client.request(method, path, content=body, headers=headers)
    else:
        response = client.request(method, path, json=body, headers=AUTH)
    assert response.status_code == status, response.text
    assert says in json.dumps(response.json()), response.text


def test_metrics_count_requests_errors_and_the_model(server):
    client, _, published = server
    client.get("/recommend", params={"user": "nobody"}, headers=AUTH)
    text = client.get("/metrics", headers=AUTH).text
    assert 'kdrec_requests_total{endpoint="/recommend",status="404"}' in text
    assert 'kdrec_request_errors_total{endpoint="/recommend",status="404"}' in text
    assert 'kdrec_request_seconds_bucket{endpoint="/recommend"' in text
    assert f'version="{published["versions"]["sequential"]}"' in text


def test_hot_reload_swaps_good_bundles_and_refuses_a_broken_one(server):
    client, registry, published = server
    versions = published["versions"]

    def serving() -> str:
        return client.get("/health").json()["version"]

    registry.rollback(versions["two_tower"])
    wait_until(lambda: serving() == versions["two_tower"], 20, "the rollback to be served")
    registry.rollback(versions["sequential"])
    wait_until(lambda: serving() == versions["sequential"], 20, "the second swap")

    broken = registry.root / "v-broken"  # a copy with a tampered file, pointed at by hand
    shutil.copytree(registry.root / versions["two_tower"], broken)
    (broken / "report.json").write_bytes(b'{"tampered": true}')  # loads fine unverified
    atomic_write_text(registry.root / "CURRENT", "v-broken\n")
    health = wait_until(
        lambda: (h := client.get("/health").json())["last_reload_error"] and h, 20, "refusal"
    )
    assert "v-broken" in health["last_reload_error"]
    assert "does not match its manifest" in health["last_reload_error"]
    assert health["version"] == versions["sequential"]  # still serving the good one
    assert client.get("/recommend", params={"user": "u1"}, headers=AUTH).status_code == 200
    registry.rollback(versions["two_tower"])  # moving CURRENT again clears the error
    health = wait_until(
        lambda: (h := client.get("/health").json())["version"] == versions["two_tower"] and h,
        20,
        "recovery",
    )
    assert health["last_reload_error"] is None


def test_without_a_token_only_loopback_binds_quietly():
    assert bind_host(None, None) == ("127.0.0.1", None)
    assert bind_host("127.0.0.1", None) == ("127.0.0.1", None)
    assert bind_host("::1", None) == ("::1", None)
    host, warning = bind_host("0.0.0.0", None)
    assert host == "0.0.0.0" and "KDREC_API_TOKEN" in warning
    assert bind_host("0.0.0.0", "t") == ("0.0.0.0", None)


def test_serve_fails_fast_without_a_published_model(tmp_path: Path):
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--registry", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "no published model" in " ".join(out.stdout.split())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_two_workers_stop_with_the_command_and_leave_no_process(published, sig):
    import psutil

    port = free_port()
    cmd = [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port), "--workers", "2"]
    cmd += ["--registry", str(published["registry"]), "--index", "sq8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        health = wait_until(
            lambda: proc.poll() is None and client.get("/health").json(), what="two workers"
        )
    assert health["index"] == "sq8"
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 2
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive


def test_with_a_signing_key_an_unsigned_bundle_is_not_served(published, monkeypatch):
    from distill.serving.recommend import Recommender
    from storage.errors import IntegrityError

    env = {**os.environ, "KDREC_SIGNING_KEY": "the-key"}
    out = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "serve", "--registry", str(published["registry"])],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "is not signed" in " ".join(out.stdout.split())  # the console wraps long lines
    monkeypatch.setenv("KDREC_SIGNING_KEY", "the-key")
    with pytest.raises(IntegrityError, match="is not signed"):
        Recommender.load(published["registry"])
