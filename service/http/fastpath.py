"""The inference routes answered without FastAPI's router, exception middleware and dependency
solver, which otherwise take about half of the event loop's time for a one-row request.

:class:`FastPath` is the innermost of the app's own middlewares, inside
:class:`service.http.observer.RequestObserver`. A ``POST`` to one of the inference routes (V2
``infer``, ``/v1`` ``score`` and ``recommend``, with or without a version) is matched with that
route's own path pattern and handed straight to the route's endpoint; every other request goes on
to FastAPI. The scope is filled in as FastAPI's router fills it (``route``, ``endpoint``,
``path_params``), so metrics, request logs and the handlers see no difference, and a
:class:`service.errors.ServingError` is answered by the same function as FastAPI's exception
handler. The routes stay registered with FastAPI, which documents them in OpenAPI.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServingError

FAST_ENDPOINTS = frozenset({"infer", "score", "recommend"})

ErrorAnswer = Callable[[Request, Exception], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def without_builtin_telemetry() -> dict[str, Any]:
    """Arguments of ``FastAPI(...)`` that switch its built-in OpenTelemetry off, where it has one.

    FastAPI 0.16x looks the global OpenTelemetry providers up (environment included) on every
    request, about a tenth of the event loop's time per inference request; this server's metrics
    are Prometheus (service.metrics.families). Older FastAPI has no such option and nothing to
    switch off.
    """
    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}


def fast_routes(routes: Iterable[BaseRoute]) -> list[APIRoute]:
    """The app's ``POST`` routes named in :data:`FAST_ENDPOINTS`, in registration order."""
    return [
        route
        for route in routes
        if isinstance(route, APIRoute)
        and route.name in FAST_ENDPOINTS
        and "POST" in (route.methods or ())
    ]


class FastPath:
    """ASGI middleware: the fast routes go to their endpoints, everything else to ``app``."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[BaseRoute], on_error: ErrorAnswer) -> None:
        self.app = app
        self.on_error = on_error
        # Routes grouped by the literal start of their path ("/v2/models/"), tried in order.
        self.groups: dict[str, list[APIRoute]] = {}
        for route in fast_routes(routes):
            prefix = route.path_format.split("{", 1)[0]
            self.groups.setdefault(prefix, []).append(route)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            found = self.match(_route_path(scope))
            if found is not None:
                route, params = found
                await self.serve(route, params, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def match(self, path: str) -> tuple[APIRoute, dict[str, Any]] | None:
        """The fast route whose pattern ``path`` matches, with its converted path parameters."""
        for prefix, routes in self.groups.items():
            if not path.startswith(prefix):
                continue
            for route in routes:
                matched = route.path_regex.match(path)
                if matched is not None:
                    convert = route.param_convertors
                    params = {k: convert[k].convert(v) for k, v in matched.groupdict().items()}
                    return route, params
        return None

    async def serve(
        self,
        route: APIRoute,
        params: dict[str, Any],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["route"] = route
        scope["endpoint"] = route.endpoint
        scope["path_params"] = params
        request = Request(scope, receive, send)
        endpoint: Endpoint = route.endpoint
        try:
            response = await endpoint(request)
        except ServingError as exc:
            response = await self.on_error(request, exc)
        await response(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path routes match: ``path`` less its ``root_path`` prefix (as Starlette's router)."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if path == root:
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path
