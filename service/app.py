"""The FastAPI application: ``create_app(settings)`` wires routes, errors, metrics and models.

Nothing is built at import time. The routes, the fast path and the metrics' inference endpoints
come from the endpoint table (service.endpoints). The lifespan starts the model reconciler (and,
on a GPU, the NVML metrics) and shuts it down. :func:`app_from_env` builds the app from
``RECSERVE_*`` variables (``uvicorn --factory service.app:app_from_env`` works too).

Every error is answered by service.http.answers: logged with its cause and the request id, a 500
at ERROR with its traceback; 4xx and 503 (refusals: queue full, timeout, not ready, draining, each
counted in the metrics) at DEBUG with their message, which the request log line also carries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

from service.endpoints import ENDPOINTS, TAGS, build_routes
from service.http.answers import exception_handlers
from service.http.docs import add_offline_docs
from service.http.fastpath import FastPath, without_builtin_telemetry
from service.http.lifecycle import Lifecycle
from service.http.observer import RequestObserver
from service.http.state import STATE_KEY, AppState
from service.metrics.families import Metrics
from service.metrics.gpu import open_gpu_collector
from service.runtime.provider import CUDA
from service.settings import Settings
from service.v2.routes import server_version

if TYPE_CHECKING:
    from service.models.reconciler import Reconciler

ReconcilerFactory = Callable[[Settings, Metrics], "Reconciler"]

__all__ = ["RequestObserver", "app_from_env", "create_app"]


def _default_reconciler(settings: Settings, metrics: Metrics) -> Reconciler:
    from service.models.reconciler import Reconciler

    return Reconciler(settings, metrics)


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    reconciler_factory: ReconcilerFactory | None = None,
    supervisor_pid: int | None = None,
) -> FastAPI:
    """A new app with its own metrics registry; the reconciler starts with the app's lifespan.

    ``supervisor_pid``: the process that started this worker, whose process tree the ``process_*``
    metrics describe when workers share their metrics (see service.metrics.multiprocess).
    """
    routes = build_routes(ENDPOINTS)
    if metrics is None:
        metrics = Metrics.for_process(
            supervisor_pid, inference_endpoints=routes.inference_endpoints
        )
    missing = [e for e in routes.inference_endpoints if e not in metrics.inflight_by_endpoint]
    if missing:
        raise ValueError(f"the metrics have no in-flight gauge for the endpoints {missing}")
    state = AppState(settings=settings, metrics=metrics, lifecycle=Lifecycle())
    build_reconciler = reconciler_factory or _default_reconciler

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        reconciler = build_reconciler(settings, metrics)
        await reconciler.start()
        state.reconciler = reconciler
        on_gpu = reconciler.registry.provider == CUDA
        gpu = open_gpu_collector(settings.cuda_device_id) if on_gpu else None
        if gpu is not None:
            metrics.add_collector(gpu)
        try:
            yield
        finally:
            state.lifecycle.begin_drain()
            await reconciler.shutdown()
            if gpu is not None:
                metrics.remove_collector(gpu)
                gpu.close()

    app = FastAPI(
        title="recserve",
        version=server_version(),
        summary="Recommendation model inference over the KServe V2 protocol.",
        lifespan=lifespan,
        exception_handlers=exception_handlers(),
        openapi_tags=[dict(tag) for tag in TAGS],
        docs_url=None,  # /docs and /redoc: service.http.docs, with no CDN
        redoc_url=None,
        **without_builtin_telemetry(),
    )
    add_offline_docs(app)
    setattr(app.state, STATE_KEY, state)
    # Added first, so innermost: the observer sees fast-path requests like any other.
    app.add_middleware(FastPath, routes=routes.inference)
    app.add_middleware(RequestObserver, state=state)
    app.include_router(routes.router)

    async def prometheus_metrics(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics", prometheus_metrics, methods=["GET"], name="metrics", include_in_schema=False
    )
    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers: settings come from ``RECSERVE_*`` environment variables."""
    return create_app(Settings())
