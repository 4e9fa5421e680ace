"""An endpoint as the server declares it, and what is derived from a table of them.

Each :class:`Endpoint` has its name (the route name, which is also the ``endpoint`` label of the
metrics), its paths, its handler, its method, its OpenAPI description and whether it runs
inference. :func:`build_routes` turns the table (service.endpoints) into the FastAPI routes, the
routes the fast path answers (every inference endpoint, service.http.fastpath) and the names the
metrics keep in-flight gauges and latency histograms for, so these three never disagree.

The handlers take the bare request (bodies are read raw), so FastAPI cannot derive their
parameters and bodies: the path's ``model`` and ``version`` parameters are declared here from the
path itself, the rest by each endpoint's :class:`OpenApi`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from modelrepo.layout import MODEL_NAME_PATTERN

Handler = Callable[[Request], Awaitable[Response]]


def _path_parameter(name: str, description: str, pattern: str) -> dict[str, Any]:
    schema = {"type": "string", "pattern": f"^{pattern}$"}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


MODEL_PARAMETER = _path_parameter(
    "model",
    "Model name: 1 to 64 of a-z 0-9 _ . - starting with a letter or digit.",
    MODEL_NAME_PATTERN.pattern,
)
VERSION_PARAMETER = _path_parameter(
    "version", "Model version: a positive integer.", "[1-9][0-9]{0,17}"
)


@dataclass(frozen=True)
class OpenApi:
    """What the OpenAPI operation says beyond what FastAPI derives from the route."""

    summary: str | None = None
    tags: tuple[str, ...] = ()
    request_body: Mapping[str, Any] | None = None  # an OpenAPI requestBody object
    parameters: tuple[Mapping[str, Any], ...] = ()  # beyond the path's model and version
    responses: Mapping[int, Mapping[str, Any]] | None = None


@dataclass(frozen=True)
class Endpoint:
    name: str
    paths: tuple[str, ...]
    handler: Handler
    method: str = "GET"
    inference: bool = False
    openapi: OpenApi = field(default_factory=OpenApi)

    def __post_init__(self) -> None:
        if not self.name or not self.paths:
            raise ValueError(f"endpoint {self.name!r} needs a name and at least one path")


def per_version(prefix: str, suffix: str = "") -> tuple[str, str]:
    """A per-model path without and with ``/versions/{version}``."""
    return f"{prefix}{suffix}", f"{prefix}/versions/{{version}}{suffix}"


def json_body(schema: Mapping[str, Any], *, required: bool = True) -> dict[str, Any]:
    """An OpenAPI requestBody of one JSON schema."""
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def path_parameters(path: str) -> list[dict[str, Any]]:
    """The ``model`` and ``version`` parameters a route path holds."""
    return [p for p in (MODEL_PARAMETER, VERSION_PARAMETER) if "{" + str(p["name"]) + "}" in path]


def _openapi_extra(path: str, openapi: OpenApi) -> dict[str, Any] | None:
    extra: dict[str, Any] = {}
    if openapi.request_body is not None:
        extra["requestBody"] = dict(openapi.request_body)
    parameters = [*path_parameters(path), *openapi.parameters]
    if parameters:
        extra["parameters"] = parameters
    return extra or None


def _responses(openapi: OpenApi) -> dict[int | str, dict[str, Any]] | None:
    if not openapi.responses:
        return None
    return {status: dict(response) for status, response in openapi.responses.items()}


@dataclass(frozen=True)
class Routes:
    """What the endpoint table becomes."""

    router: APIRouter
    inference: tuple[APIRoute, ...]  # the fast path's routes, in registration order
    inference_endpoints: tuple[str, ...]  # their names, distinct: the metrics' endpoint list


def build_routes(endpoints: Iterable[Endpoint]) -> Routes:
    """One FastAPI route per endpoint and path, in table order (the order routes are matched)."""
    router = APIRouter()
    inference: list[APIRoute] = []
    for endpoint in endpoints:
        spec = endpoint.openapi
        for path in endpoint.paths:
            router.add_api_route(
                path,
                endpoint.handler,
                methods=[endpoint.method],
                name=endpoint.name,
                summary=spec.summary,
                tags=list(spec.tags) or None,
                response_class=Response,
                responses=_responses(spec),
                openapi_extra=_openapi_extra(path, spec),
            )
            route = router.routes[-1]
            assert isinstance(route, APIRoute)
            if endpoint.inference:
                inference.append(route)
    names = tuple(dict.fromkeys(route.name for route in inference))
    return Routes(router, tuple(inference), names)
