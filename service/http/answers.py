"""The one function that turns an error into a response, for every path a request can fail on.

An error answer has the body ``{"error": "<message>"}``, the error's status and headers, its
message noted for the request log line, and one log line with the request id: at ERROR with the
traceback for a server fault (a 5xx other than 503), at DEBUG otherwise, since refusals (4xx, and
503: queue full, timeout, not ready, draining) are counted in the metrics and are no fault of the
server. FastAPI's exception handlers, the fast path, the readiness probe and the request
observer's last-resort 500 all answer through :func:`error_response`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from http import HTTPStatus
from typing import Any

import orjson
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from service.errors import ServingError, describe_problems
from service.http.request_log import note_error, request_id_of

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal server error"
JSON_TYPE = "application/json"


def error_response(
    scope: Scope,
    status_code: int,
    message: str,
    headers: Mapping[str, str] | None = None,
    *,
    cause: BaseException | None = None,
) -> Response:
    """The answer to a request that failed: body, status, headers, request-log note, log line.

    ``cause``: the exception of a server fault, logged with its traceback at ERROR.
    """
    note_error(scope.setdefault("state", {}), message)
    where = (request_id_of(scope), scope.get("method", "-"), scope.get("path", "-"))
    if cause is None:
        logger.debug("request %s: %s %s -> %d: %s", *where, status_code, message)
    else:
        logger.error("request %s: %s %s -> %d: %s", *where, status_code, message, exc_info=cause)
    return Response(
        error_body(message), status_code, headers=dict(headers or {}), media_type=JSON_TYPE
    )


def error_body(message: str) -> bytes:
    """The body of every error answer: ``{"error": message}``."""
    return orjson.dumps({"error": message})


def error_bytes(status_code: int, message: str, headers: Mapping[str, str] | None = None) -> bytes:
    """The answer of :func:`error_response` as the bytes of an HTTP/1.1 response that ends the
    connection: for the refusals the HTTP edge makes before a request reaches the app
    (service.http.protocol), where there is no ASGI response to send."""
    body = error_body(message)
    lines = [
        f"HTTP/1.1 {status_code} {HTTPStatus(status_code).phrase}",
        f"content-type: {JSON_TYPE}",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def serving_error_response(scope: Scope, exc: ServingError) -> Response:
    """A :class:`ServingError` answered with its own status and headers (the error taxonomy)."""
    fault = exc.status_code >= 500 and exc.status_code != 503
    return error_response(
        scope, exc.status_code, exc.message, exc.headers(), cause=exc if fault else None
    )


# FastAPI's exception handlers: each hands its exception to the functions above.


async def on_serving_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServingError)
    return serving_error_response(request.scope, exc)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return error_response(request.scope, 400, f"invalid request: {describe_problems(exc.errors())}")


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(request.scope, exc.status_code, str(exc.detail), exc.headers)


async def on_internal_error(request: Request, exc: Exception) -> Response:
    # Reached only if the RequestObserver itself fails: it answers and logs every other exception.
    return error_response(request.scope, 500, INTERNAL_ERROR, cause=exc)


ExceptionHandler = Callable[[Request, Any], Coroutine[Any, Any, Response]]


def exception_handlers() -> dict[int | type[Exception], ExceptionHandler]:
    """FastAPI's ``exception_handlers``: every exception it catches is answered here."""
    return {
        ServingError: on_serving_error,
        RequestValidationError: on_validation_error,
        HTTPException: on_http_error,
        Exception: on_internal_error,
    }
