"""The FastAPI application: ``create_app(settings)`` wires routes, errors, metrics and models.

Nothing is built at import time. The lifespan starts the model manager
(and, on a GPU, the NVML metrics) and shuts it down. :func:`app_from_env` builds the app from
``RECSERVE_*`` variables (``uvicorn --factory service.app:app_from_env`` works too).

Errors are logged with their cause and the request id: a 500 at ERROR with its traceback; 4xx and
503 (refusals: queue full, timeout, not ready, draining, each counted in the metrics and logged
where it arises) at DEBUG with their message, which the request log line also carries.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service.errors import ServingError
from service.http.fastpath import FastPath, without_builtin_telemetry
from service.http.lifecycle import Lifecycle
from service.http.observer import RequestObserver, note_error, request_id_of
from service.http.state import STATE_KEY, AppState
from service.metrics.families import Metrics
from service.metrics.gpu import open_gpu_collector
from service.runtime.session import CUDA
from service.settings import Settings
from service.v1.routes import create_router as create_v1_router
from service.v2 import create_router
from service.v2.routes import server_version

if TYPE_CHECKING:
    from service.models.manager import ModelManager

logger = logging.getLogger(__name__)

ManagerFactory = Callable[[Settings, Metrics], "ModelManager"]

__all__ = ["RequestObserver", "app_from_env", "create_app"]


def _error(message: str, status_code: int, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": message})
    return Response(body, status_code, headers=headers, media_type="application/json")


def _log_answered(request: Request, status_code: int, message: str) -> None:
    note_error(request.state, message)
    logger.debug(
        "request %s: %s %s -> %d: %s",
        request_id_of(request.scope),
        request.method,
        request.url.path,
        status_code,
        message,
    )


async def _serving_error(request: Request, exc: Exception) -> Response:
    """The one place where the error taxonomy becomes HTTP status codes."""
    assert isinstance(exc, ServingError)
    if exc.status_code >= 500 and exc.status_code != 503:
        note_error(request.state, exc.message)
        logger.error(
            "request %s: %s %s -> %d: %s",
            request_id_of(request.scope),
            request.method,
            request.url.path,
            exc.status_code,
            exc.message,
            exc_info=exc,
        )
    else:
        _log_answered(request, exc.status_code, exc.message)
    return _error(exc.message, exc.status_code, exc.headers())


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
        for err in exc.errors()
    )
    message = f"invalid request: {problems}"
    _log_answered(request, 400, message)
    return _error(message, 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    _log_answered(request, exc.status_code, str(exc.detail))
    return _error(str(exc.detail), exc.status_code, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Reached only if the RequestObserver itself fails: it answers and logs every other exception.
    return _error("internal server error", 500)


def _default_manager(settings: Settings, metrics: Metrics) -> ModelManager:
    from service.models.manager import ModelManager

    return ModelManager(settings, metrics)


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    manager_factory: ManagerFactory | None = None,
    supervisor_pid: int | None = None,
) -> FastAPI:
    """A new app with its own metrics registry; the manager starts with the app's lifespan.

    ``supervisor_pid``: the process that started this worker, whose process tree the ``process_*``
    metrics describe when workers share their metrics (see service.metrics.multiprocess).
    """
    metrics = metrics if metrics is not None else Metrics.for_process(supervisor_pid)
    state = AppState(settings=settings, metrics=metrics, lifecycle=Lifecycle())
    build_manager = manager_factory or _default_manager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager = build_manager(settings, metrics)
        await manager.start()
        state.manager = manager
        on_gpu = getattr(manager, "provider", "") == CUDA
        gpu = open_gpu_collector(settings.cuda_device_id) if on_gpu else None
        if gpu is not None:
            metrics.add_collector(gpu)
        try:
            yield
        finally:
            state.lifecycle.begin_drain()
            await manager.shutdown()
            if gpu is not None:
                metrics.remove_collector(gpu)
                gpu.close()

    app = FastAPI(
        title="recserve",
        version=server_version(),
        summary="Recommendation model inference over the KServe V2 protocol.",
        lifespan=lifespan,
        **without_builtin_telemetry(),
    )
    setattr(app.state, STATE_KEY, state)
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    routers = [create_router(), create_v1_router()]
    # Added first, so innermost: the observer sees fast-path requests like any other.
    fast = [route for router in routers for route in router.routes]
    app.add_middleware(FastPath, routes=fast, on_error=_serving_error)
    app.add_middleware(RequestObserver, state=state)
    for router in routers:
        app.include_router(router)

    async def prometheus_metrics(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics", prometheus_metrics, methods=["GET"], name="metrics", include_in_schema=False
    )
    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers: settings come from ``RECSERVE_*`` environment variables."""
    return create_app(Settings())
