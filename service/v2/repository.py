"""The V2 model repository extension: index, load, unload; and ``GET /v2/models``.

The index is read-only and anyone may read it (``POST /v2/repository/index``, and the same list as
``GET /v2/models``): model, version, state, and a reason the server words itself, never a path or a
library's message (:meth:`service.models.registry.IndexEntry.public`). A caller with the admin
token gets the full reasons; a caller sending any other credentials is refused, so a misconfigured
client finds out rather than silently reading less. Loading and unloading need the token; they are
the reconciler's work (service.models.reconciler): these handlers check the token and the request,
then ask it.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.errors import InvalidInput, Unauthenticated, Unauthorized, not_utf8
from service.http.admission import check_model_name
from service.http.request_body import read_body
from service.http.state import app_state, get_reconciler, get_registry
from service.models.state import State
from service.v2.routes import json_response


def check_admin(request: Request) -> None:
    """The repository API needs ``Authorization: Bearer <admin token>``: 401 without the header,
    403 with another token, or with any when no admin token is configured."""
    token = app_state(request).settings.admin_token
    if token is None or not token.get_secret_value():
        raise Unauthorized("the repository API is disabled: no admin token is configured")
    if "authorization" not in request.headers:
        raise Unauthenticated("the admin token is required: Authorization: Bearer <token>")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("a valid admin token is required: Authorization: Bearer <token>")


async def _json_body(request: Request) -> dict[str, Any]:
    """An optional small JSON object body; empty means ``{}``."""
    body = await read_body(request, app_state(request).settings.max_request_bytes)
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if bad := not_utf8(body):
            raise InvalidInput(f"request body is {bad}") from None
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object")
    return doc


def _is_admin(request: Request) -> bool:
    """False for a caller without credentials; True for the admin token; refused otherwise."""
    if "authorization" not in request.headers:
        return False
    check_admin(request)
    return True


def _index(request: Request, *, detailed: bool, ready_only: bool = False) -> Response:
    entries = [
        {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
        for e in (entry if detailed else entry.public() for entry in get_registry(request).index())
        if not ready_only or e.state == State.READY
    ]
    return json_response(entries)


async def index(request: Request) -> Response:
    """``POST /v2/repository/index``; the body may ask for ``{"ready": true}`` entries only."""
    detailed = _is_admin(request)  # credentials first: a wrong token is refused unread
    options = await _json_body(request)
    ready_only = options.get("ready")
    if ready_only is not None and not isinstance(ready_only, bool):
        raise InvalidInput("'ready' must be true or false")
    return _index(request, detailed=detailed, ready_only=bool(ready_only))


async def models(request: Request) -> Response:
    """``GET /v2/models``: the repository index, as people and scripts browse it."""
    return _index(request, detailed=_is_admin(request))


async def load(request: Request) -> Response:
    check_admin(request)
    name = check_model_name(request.path_params["model"])
    parameters = (await _json_body(request)).get("parameters")
    if parameters is None:
        parameters = {}
    elif not isinstance(parameters, dict):
        raise InvalidInput("'parameters' must be a JSON object")
    if "config" in parameters or any(key.startswith("file:") for key in parameters):
        raise InvalidInput(
            "loading with a config or files in the request is not supported; "
            "publish a version into the model repository instead"
        )
    await get_reconciler(request).load(name)
    return json_response({})


async def unload(request: Request) -> Response:
    check_admin(request)
    name = check_model_name(request.path_params["model"])
    await _json_body(request)
    await get_reconciler(request).unload(name)
    return json_response({})
