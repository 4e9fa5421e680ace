"""An endpoint as the server declares it, and what is derived from a table of them.

Each :class:`Endpoint` has its name (the route name, which is also the ``endpoint`` label of the
metrics), its paths, its handler, its method, its OpenAPI description and whether it runs
inference. :func:`build_routes` turns the table (service.endpoints) into the FastAPI routes, the
routes the fast path answers (every inference endpoint, service.http.fastpath) and the names the
metrics keep in-flight gauges and latency histograms for, so these three never disagree.

The handlers take the bare request (bodies are read raw), so FastAPI cannot derive their
parameters and bodies: the path's ``model`` and ``version`` parameters are declared here from the
path itself, the rest by each endpoint's :class:`OpenApi`.

The document tells every status an operation can answer, each refusal with the one error body
(:class:`Error`): those the handler gives (``OpenApi.refusals``) and those the HTTP edge gives to
any request (a request the parser refuses, headers too large or too slow, a body over the limit,
the connection cap). Tools that generate requests from the schema (tests/test_schemathesis.py)
check the server against it, so it must stay the truth.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict
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


class Error(BaseModel):
    """The body of every error answer: what went wrong, in one line."""

    model_config = ConfigDict(extra="forbid")

    error: str


RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before sending the request again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 0},
    }
}

REFUSALS: Mapping[int, str] = {
    400: "The request is malformed: the HTTP parser refused it, or its path, headers or body "
    "do not match what the operation takes (the message names what).",
    401: "No `Authorization` header: the operation needs the admin token.",
    403: "The `Authorization` header holds no valid admin token, or none is configured.",
    404: "No such model, or no such version of it.",
    408: "The request's headers or body did not arrive within the server's time limits; the "
    "connection is closed.",
    413: "The request body (after decompression) is over `--max-request-bytes`.",
    431: "The request's headers are over the server's limit on their size or count.",
    500: "The model failed on the request's rows.",
    503: "The server cannot take the request now: the version is not ready, its queue is full, "
    "the request timed out in the queue, the server is shutting down, or the worker holds its "
    "maximum of connections. Send it again after `Retry-After` seconds.",
}
EDGE_REFUSALS = (400, 408, 431)  # any request: answered by the HTTP edge before a handler runs
BODY_REFUSALS = (413,)  # any request whose body the handler reads
CAPPED_REFUSALS = (503,)  # any request beyond the connection cap, except the health probes
UNCAPPED_PREFIX = "/v2/health/"


WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "The scheme to authenticate with: `Bearer`.",
        "required": True,
        "schema": {"type": "string"},
    }
}


def refusal(status: int, description: str | None = None, *, retry: bool = True) -> dict[str, Any]:
    """The response object of a refusal: its description and the error body, and the header it
    always carries: ``WWW-Authenticate`` on a 401, ``Retry-After`` on a 503 to retry."""
    response: dict[str, Any] = {"model": Error, "description": description or REFUSALS[status]}
    if status == 401:
        response["headers"] = WWW_AUTHENTICATE
    if status == 503 and retry:
        response["headers"] = RETRY_AFTER
    return response


def json_content(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    """A response object with one JSON body."""
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ADMIN_TOKEN = HTTPBearer(
    scheme_name="adminToken",
    description="The server's admin token (`--admin-token`, `RECSERVE_ADMIN_TOKEN`), sent as "
    "`Authorization: Bearer <token>`.",
    auto_error=False,  # documents the scheme only: the handler checks the token (403)
)


@dataclass(frozen=True)
class OpenApi:
    """What the OpenAPI operation says beyond what FastAPI derives from the route.

    ``refusals``: the statuses the handler itself answers besides success (each documented with
    the error body; a 503 with ``Retry-After``); the edge's are added to every operation.
    ``responses`` replaces any of them (and the success) with its own response object.
    """

    summary: str | None = None
    tags: tuple[str, ...] = ()
    request_body: Mapping[str, Any] | None = None  # an OpenAPI requestBody object
    parameters: tuple[Mapping[str, Any], ...] = ()  # beyond the path's model and version
    ok: Mapping[str, Any] | None = None  # the 200 response object
    refusals: tuple[int, ...] = ()
    responses: Mapping[int, Mapping[str, Any]] | None = None
    admin_token: bool = False  # the operation needs the admin token (a bearer scheme)


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


def _responses(method: str, path: str, openapi: OpenApi) -> dict[int | str, dict[str, Any]]:
    """Every status the operation can answer: success, the handler's refusals, the edge's."""
    statuses = {*openapi.refusals, *EDGE_REFUSALS}
    if method == "POST":
        statuses.update(BODY_REFUSALS)
    if not path.startswith(UNCAPPED_PREFIX):
        statuses.update(CAPPED_REFUSALS)
    responses: dict[int | str, dict[str, Any]] = {
        200: dict(openapi.ok or {"description": "Success."})
    }
    responses.update({status: refusal(status) for status in sorted(statuses)})
    responses.update({status: dict(r) for status, r in (openapi.responses or {}).items()})
    return responses


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
                responses=_responses(endpoint.method, path, spec),
                openapi_extra=_openapi_extra(path, spec),
                dependencies=[Depends(ADMIN_TOKEN)] if spec.admin_token else None,
            )
            route = router.routes[-1]
            assert isinstance(route, APIRoute)
            if endpoint.inference:
                inference.append(route)
    names = tuple(dict.fromkeys(route.name for route in inference))
    return Routes(router, tuple(inference), names)
