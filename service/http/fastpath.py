"""The inference routes answered without FastAPI's router, exception middleware and dependency
solver, which otherwise take about half of the event loop's time for a one-row request.

:class:`FastPath` is the innermost of the app's own middlewares, inside
:class:`service.http.observer.RequestObserver`. A request to one of the inference routes (every
endpoint the table in service.endpoints marks as inference: V2 ``infer``, ``/v1`` ``score`` and
``recommend``, with or without a version) is matched with that route's own path pattern and
method and handed straight to the route's endpoint; every other request goes on to FastAPI. The
scope is filled in as FastAPI's router fills it (``route``, ``endpoint``, ``path_params``), so
metrics, request logs and the handlers see no difference, and a
:class:`service.errors.ServingError` is answered by the same function as FastAPI's exception
handler (service.http.answers). The routes stay registered with FastAPI, which documents them in
OpenAPI.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServingError
from service.http.answers import serving_error_response
from service.http.routing import Handler


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


class FastPath:
    """ASGI middleware: the fast routes go to their endpoints, everything else to ``app``."""

    def __init__(self, app: ASGIApp, *, routes: Iterable[APIRoute]) -> None:
        self.app = app
        # Routes grouped by the literal start of their path ("/v2/models/"), tried in order.
        self.groups: dict[str, list[APIRoute]] = {}
        self.methods: frozenset[str] = frozenset()
        for route in routes:
            prefix = route.path_format.split("{", 1)[0]
            self.groups.setdefault(prefix, []).append(route)
            self.methods |= route.methods or set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in self.methods:
            found = self.match(_route_path(scope), scope["method"])
            if found is not None:
                route, params = found
                await self.serve(route, params, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def match(self, path: str, method: str) -> tuple[APIRoute, dict[str, Any]] | None:
        """The fast route whose pattern and method match, with its converted path parameters."""
        for prefix, routes in self.groups.items():
            if not path.startswith(prefix):
                continue
            for route in routes:
                if method not in (route.methods or ()):
                    continue
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
        endpoint: Handler = route.endpoint
        try:
            response = await endpoint(request)
        except ServingError as exc:
            response = serving_error_response(scope, exc)
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
