"""The FastAPI application: ``create_app(settings)`` wires routes, errors, metrics and the manager.

Nothing is built at import time. The lifespan starts the :class:`service.manager.ModelManager`
and shuts it down. :func:`app_from_env` builds the app from ``RECSERVE_*`` variables, as each
worker process does (``uvicorn --factory service.app:app_from_env`` works too).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServingError
from service.lifecycle import Lifecycle
from service.metrics import Metrics
from service.settings import Settings
from service.state import STATE_KEY, AppState
from service.v1.routes import create_router as create_v1_router
from service.v2 import create_router
from service.v2.routes import server_version

if TYPE_CHECKING:
    from service.manager import ModelManager

logger = logging.getLogger(__name__)
request_logger = logging.getLogger("recserve.request")

ManagerFactory = Callable[[Settings, Metrics], "ModelManager"]
_CLOSE = (b"connection", b"close")


def _error(message: str, status_code: int, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": message})
    return Response(body, status_code, headers=headers, media_type="application/json")


async def _serving_error(request: Request, exc: Exception) -> Response:
    """The one place where the error taxonomy becomes HTTP status codes."""
    assert isinstance(exc, ServingError)
    logger.debug("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
    return _error(exc.message, exc.status_code, exc.headers())


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', '')}"
        for err in exc.errors()
    )
    return _error(f"invalid request: {problems}", 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(str(exc.detail), exc.status_code, dict(exc.headers or {}))


async def _internal_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the exception after this response, so the server logs its traceback.
    return _error("internal server error", 500)


class RequestObserver:
    """Counts every HTTP request (endpoint and status), tracks in-flight requests for draining,
    and writes one JSON log line per request when ``request_log`` is on."""

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # if the app raises before it answers
        started = time.perf_counter()
        labels: dict[str, Any] = scope.setdefault("state", {})

        lifecycle = self.state.lifecycle

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if lifecycle.draining:  # clients stop reusing the connection
                    message = {**message, "headers": [*message.get("headers", ()), _CLOSE]}
            await send(message)

        lifecycle.request_started()
        try:
            await self.app(scope, receive, send_observed)
        finally:
            lifecycle.request_finished()
            route = scope.get("route")
            endpoint = getattr(route, "name", None) or "unmatched"
            model = str(labels.get("metric_model", ""))
            version = str(labels.get("metric_version", ""))
            self.state.metrics.requests.labels(model, version, endpoint, str(status)).inc()
            if self.state.settings.request_log:
                request_logger.info(
                    orjson.dumps(
                        {
                            "method": scope["method"],
                            "path": scope["path"],
                            "endpoint": endpoint,
                            "model": model,
                            "version": version,
                            "status": status,
                            "duration_ms": round((time.perf_counter() - started) * 1e3, 3),
                        }
                    ).decode()
                )


def _default_manager(settings: Settings, metrics: Metrics) -> ModelManager:
    from service.manager import ModelManager

    return ModelManager(settings, metrics)


def create_app(
    settings: Settings,
    *,
    metrics: Metrics | None = None,
    manager_factory: ManagerFactory | None = None,
) -> FastAPI:
    """A new app with its own metrics registry; the manager starts with the app's lifespan."""
    metrics = metrics if metrics is not None else Metrics()
    state = AppState(settings=settings, metrics=metrics, lifecycle=Lifecycle())
    build_manager = manager_factory or _default_manager

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        manager = build_manager(settings, metrics)
        await manager.start()
        state.manager = manager
        try:
            yield
        finally:
            state.lifecycle.begin_drain()
            await manager.shutdown()

    app = FastAPI(
        title="recserve",
        version=server_version(),
        summary="Recommendation model inference over the KServe V2 protocol.",
        lifespan=lifespan,
    )
    setattr(app.state, STATE_KEY, state)
    app.add_exception_handler(ServingError, _serving_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(RequestObserver, state=state)
    app.include_router(create_router())
    app.include_router(create_v1_router())

    async def prometheus_metrics(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics", prometheus_metrics, methods=["GET"], name="metrics", include_in_schema=False
    )
    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers: settings come from ``RECSERVE_*`` environment variables."""
    return create_app(Settings())
