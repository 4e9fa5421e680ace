"""The V2 model repository extension: index, load, unload; each needs the admin token.

Loading and unloading are the reconciler's work (service.models.reconciler); these handlers check
the token and the request, then ask it.
"""

from __future__ import annotations

import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service.errors import InvalidInput, Unauthorized
from service.http.admission import check_model_name
from service.http.request_body import read_body
from service.http.state import app_state, get_reconciler, get_registry
from service.models.state import State
from service.v2.routes import json_response


def check_admin(request: Request) -> None:
    """The repository API needs ``Authorization: Bearer <admin token>``; 403 otherwise."""
    token = app_state(request).settings.admin_token
    if token is None or not token.get_secret_value():
        raise Unauthorized("the repository API is disabled: no admin token is configured")
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
        raise InvalidInput(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidInput("request body must be a JSON object")
    return doc


async def index(request: Request) -> Response:
    check_admin(request)
    options = await _json_body(request)
    ready_only = options.get("ready") is True
    entries = [
        {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
        for e in get_registry(request).index()
        if not ready_only or e.state == State.READY
    ]
    return json_response(entries)


async def load(request: Request) -> Response:
    check_admin(request)
    name = check_model_name(request.path_params["model"])
    parameters = (await _json_body(request)).get("parameters") or {}
    if not isinstance(parameters, dict):
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
