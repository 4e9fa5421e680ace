"""How a request reaches a served version: the step every protocol's endpoints share.

:func:`resolve` checks the path's model name and version (the repository's own rules, so a name
that cannot exist never reaches the registry), finds the served version and labels the request's
metrics with it. :func:`admitted` is the common start of every inference endpoint (V2 ``infer``,
``/v1`` ``score`` and ``recommend``): refuse while draining, read the body within the limit,
resolve the version after the upload (so a version retired meanwhile is not used), and count the
request in its endpoint's in-flight gauge while it is handled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from modelrepo import is_model_name, parse_version
from service.errors import InvalidInput, ShuttingDown
from service.http.request_body import discard_body, read_body
from service.http.request_log import set_labels
from service.http.state import app_state, get_registry

if TYPE_CHECKING:
    from starlette.requests import Request

    from service.models.served import ServedVersion

_T = TypeVar("_T")


def check_model_name(name: str) -> str:
    """The path's model name if it can name a model in the repository, else 400."""
    if not is_model_name(name):
        raise InvalidInput(
            "invalid model name: expected 1 to 64 of a-z 0-9 _ . - starting with a letter or digit"
        )
    return name


def check_version(raw: str | None) -> int | None:
    """The path's version as a positive integer (None when the path has none), else 400."""
    if raw is None:
        return None
    version = parse_version(raw)
    if version is None:
        raise InvalidInput(f"invalid model version {raw[:32]!r}: expected a positive integer")
    return version


def resolve(request: Request) -> ServedVersion:
    """The served version the path's model (and version) names; sets the metric labels."""
    name = check_model_name(request.path_params["model"])
    version = check_version(request.path_params.get("version"))
    served = get_registry(request).get(name, version)
    set_labels(request.scope.setdefault("state", {}), served.name, str(served.version))
    return served


async def admitted(request: Request, handle: Callable[[bytes, ServedVersion], Awaitable[_T]]) -> _T:
    """``handle(body, version)`` for an inference request, once it is admitted.

    The in-flight gauge is the one of the request's route (the endpoint's name), which exists
    for every inference endpoint of the table (service.endpoints).
    """
    state = app_state(request)
    if state.lifecycle.draining:
        await discard_body(request, state.settings.max_request_bytes)  # so the 503 is read
        raise ShuttingDown("the server is shutting down; send the request elsewhere")
    body = await read_body(request, state.settings.max_request_bytes)
    served = resolve(request)
    inflight = state.metrics.inflight_by_endpoint[request.scope["route"].name]
    inflight.inc()
    try:
        return await handle(body, served)
    finally:
        inflight.dec()
