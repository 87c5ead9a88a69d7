"""`kdrec serve`: the published model over HTTP (FastAPI + uvicorn).

GET  /recommend?user=…&k=…[&fallback=popular]   a known user, from the bundle's user vectors
POST /recommend {"history": [item ids], "k": N}  any history, through the student's user tower
GET  /similar?item=…&k=…                         items nearest to an item's vector
GET  /explain?user=…&item=…                      the history items that raised the item's score
GET  /health                                     model version, dataset, last reload error
GET  /metrics                                    Prometheus text: requests, latency, errors, model

Hot reload: a thread polls the registry's CURRENT pointer; a new version is loaded and verified
off the request path, then swapped in with one reference assignment, so a request in flight
finishes on the model it started with and none is dropped. A bundle that fails to load or verify
is never swapped in; /health reports why until CURRENT moves again.

Stateless: every worker (and every replica on any host that mounts the registry) loads the same
CURRENT on its own; put any number of them behind a load balancer. /metrics is per process.

Access control: with KDREC_API_TOKEN set every endpoint but /health needs
`Authorization: Bearer <token>` (compared in constant time), else 401.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, ConfigDict, Field

from distill.serving.recommend import BadRequest, Recommender, UnknownItems, UnknownUser
from storage.registry import Registry

log = logging.getLogger(__name__)
TOKEN_ENV = "KDREC_API_TOKEN"
SETTINGS_ENV = "KDREC_SERVE_SETTINGS"  # how `kdrec serve --workers N` hands settings to workers
OPEN_PATHS = {"/health"}


class ServeSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    registry: Path  # the registry folder (work_dir/registry)
    work_dir: Path | None = None  # whose key file holds the user-id key (else $KDREC_ID_KEY)
    model: str = "kdrec"  # model name inside the registry
    reload_seconds: float = Field(2.0, gt=0)  # how often CURRENT is checked
    # torch and FAISS threads per worker process: a request is one user, so 1; scale with workers
    threads: int = Field(1, ge=1)
    max_k: int = Field(1000, ge=1)  # the largest k a request may ask for
    index: Literal["exact", "sq8"] = "exact"  # float32 index or the bundle's int8 copy
    tower: Literal["float32", "int8"] = "float32"  # the user tower for posted histories


class HistoryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    history: list[str] = Field(description="item ids the user interacted with, oldest first")
    k: int = Field(10, ge=1)
    exclude_seen: bool = True


class ModelHolder:
    """The model being served and the thread that swaps in a new CURRENT."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.registry = Registry(settings.registry, settings.model)
        self.interval = settings.reload_seconds
        self.model = self._load("current")
        self.last_error: str | None = None
        self.reloads = 0
        self.reload_failures = 0
        self._failed: str | None = None  # the version that failed; retried once CURRENT moves
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="kdrec-reload", daemon=True)

    def _load(self, version: str) -> Recommender:
        s = self.settings
        return Recommender.load(
            s.registry, s.model, version, index=s.index, tower=s.tower, work_dir=s.work_dir
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def check(self) -> None:
        """Swap in CURRENT if it moved and verifies; otherwise keep serving what we have."""
        try:
            version = self.registry.current_version()
        except OSError as exc:
            self.last_error = f"cannot read CURRENT: {exc}"
            return
        if version is None or version in (self.model.version, self._failed):
            return
        try:
            fresh = self._load(version)
        except Exception as exc:  # any broken bundle must leave the old model serving
            self._failed = version
            self.reload_failures += 1
            self.last_error = f"version {version} not loaded: {exc}"
            log.error("hot reload refused %s: %s", version, exc)
            return
        old, self.model = self.model.version, fresh  # one assignment: the swap
        self._failed, self.last_error = None, None
        self.reloads += 1
        log.info("hot reload: %s -> %s", old, version)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kdrec_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.errors = Counter(
            "kdrec_request_errors", "HTTP responses with status >= 400", ["endpoint", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "kdrec_request_seconds",
            "request latency",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self.model = Gauge(
            "kdrec_model_info", "the model being served", ["version", "dataset"],
            registry=self.registry,
        )  # fmt: skip
        self.reloads = Gauge("kdrec_reloads", "hot reloads done", registry=self.registry)
        self.reload_failures = Gauge(
            "kdrec_reload_failures", "bundles refused at reload", registry=self.registry
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if status >= 400:
            self.errors.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def render(self, holder: ModelHolder) -> bytes:
        self.model.clear()
        model = holder.model
        self.model.labels(model.version, str(model.manifest.get("dataset", ""))).set(1)
        self.reloads.set(holder.reloads)
        self.reload_failures.set(holder.reload_failures)
        return generate_latest(self.registry)


def _recs(recs: list) -> list[dict]:
    return [asdict(r) for r in recs]


def create_app(settings: ServeSettings, token: str | None = None) -> FastAPI:
    """The service for one registry model. `token` None: no authentication."""
    holder = ModelHolder(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start()
        log.info("serving %s/%s (pid %d)", settings.model, holder.model.version, os.getpid())
        yield
        holder.stop()

    app = FastAPI(title="kdrec", lifespan=lifespan)
    app.state.holder = holder

    @app.middleware("http")
    async def guard_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        if token is not None and request.url.path not in OPEN_PATHS:
            given = request.headers.get("authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                response: Response = JSONResponse(
                    {"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                    status_code=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", None) or "unmatched"
        metrics.observe(endpoint, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(UnknownUser)
    async def unknown_user(request: Request, exc: UnknownUser) -> JSONResponse:
        return JSONResponse({"detail": str(exc).replace("--fallback", "fallback=")}, 404)

    @app.exception_handler(UnknownItems)
    async def unknown_items(request: Request, exc: UnknownItems) -> JSONResponse:
        status = 400 if request.method == "POST" else 404
        return JSONResponse({"detail": str(exc), "unknown": exc.ids[:20]}, status)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 400)

    k_query = Query(10, ge=1, le=settings.max_k, description="how many items")

    @app.get("/recommend")
    def recommend(user: str, k: int = k_query, fallback: str | None = None) -> dict:
        """Top-k unseen items for a known user; fallback=popular serves unknown users too."""
        if fallback not in (None, "popular"):
            raise HTTPException(400, f"fallback must be 'popular', got {fallback!r}")
        model = holder.model
        return {
            "user": user,
            "version": model.version,
            "items": _recs(model.recommend(user, k, fallback=fallback)),
        }

    @app.post("/recommend")
    def recommend_history(body: HistoryRequest) -> dict:
        """Top-k for a history of item ids (oldest first), through the student's user tower."""
        if body.k > settings.max_k:
            raise HTTPException(422, f"k must be at most {settings.max_k}, got {body.k}")
        model = holder.model
        recs = model.recommend_history(body.history, body.k, exclude_seen=body.exclude_seen)
        return {"version": model.version, "items": _recs(recs)}

    @app.get("/similar")
    def similar(item: str, k: int = k_query) -> dict:
        """The k items whose vectors are nearest to this item's (itself excluded)."""
        model = holder.model
        return {"item": item, "version": model.version, "items": _recs(model.similar(item, k))}

    @app.get("/explain")
    def explain(user: str, item: str, top: int = Query(5, ge=1, le=100)) -> dict:
        """How much each of the user's history items raised the item's score."""
        model = holder.model
        return {"version": model.version, **asdict(model.explain(user, item, top))}

    @app.get("/health")
    def health() -> dict:
        """Always open: the version and dataset served, and the last reload error if any."""
        model = holder.model
        return {
            "status": "ok",
            "model": settings.model,
            "version": model.version,
            "dataset": model.manifest.get("dataset"),
            "n_items": model.n_items,
            "index": holder.settings.index,
            "tower": holder.settings.tower,
            "reloads": holder.reloads,
            "last_reload_error": holder.last_error,
        }

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.render(holder), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_env() -> FastAPI:
    """uvicorn's factory in each worker process: settings from KDREC_SERVE_SETTINGS."""
    if SETTINGS_ENV not in os.environ:
        raise RuntimeError(f"{SETTINGS_ENV} is not set; start the service with `kdrec serve`")
    settings = ServeSettings.model_validate(json.loads(os.environ[SETTINGS_ENV]))
    import faiss
    import torch

    # one request is one user: intra-op threads only contend with the other workers' requests
    torch.set_num_threads(settings.threads)
    faiss.omp_set_num_threads(settings.threads)
    return create_app(settings, os.environ.get(TOKEN_ENV) or None)


def bind_host(host: str | None, token: str | None) -> tuple[str, str | None]:
    """(host to bind, warning or None). Without a token only loopback unless asked for."""
    if host is None:
        return "127.0.0.1", None
    if token:
        return host, None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return host, None
    return host, (
        f"serving on {host} without {TOKEN_ENV}: anyone who can reach this port can query the "
        f"model; set {TOKEN_ENV} to require a bearer token"
    )


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, made with proto=IPPROTO_TCP. asyncio disables Nagle on a connection
    only when its socket says TCP; uvicorn's own socket for --workers > 1 says 0, and two workers
    answered in 44 ms (Nagle + delayed ACK) where one answered in 2 ms."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(
    settings: ServeSettings, *, host: str | None, port: int, workers: int, log_level: str
) -> None:
    """Run uvicorn with `workers` processes, each loading CURRENT itself (fails fast here)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    token = os.environ.get(TOKEN_ENV) or None
    bind, warning = bind_host(host, token)
    if warning:
        log.warning(warning)
    Registry(settings.registry, settings.model).bundle().verify()  # a clear error before forking
    os.environ[SETTINGS_ENV] = settings.model_dump_json()
    config = uvicorn.Config(
        "pipelines.serve:app_from_env",
        factory=True,
        host=bind,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,
    )
    sock = listen(bind, port)
    log.info("kdrec serve on http://%s:%d with %d worker(s)", bind, port, workers)
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
    else:
        uvicorn.Server(config).run(sockets=[sock])
