"""The server's error taxonomy: one exception type per failure, mapped to HTTP status in one place.

Status codes follow Triton's HTTP frontend: invalid argument 400, not found 404, unavailable 503,
internal 500. Every error response has the body ``{"error": "<message>"}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar


class ServingError(Exception):
    """Base class; ``status_code`` is the HTTP status the error is answered with."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        return {}


class InvalidInput(ServingError):
    """The request is malformed or does not match the model's inputs."""

    status_code = 400


class PayloadTooLarge(ServingError):
    status_code = 413


class Unauthorized(ServingError):
    """The repository API was called without a valid admin token (or none is configured)."""

    status_code = 403


class Unauthenticated(Unauthorized):
    """The repository API was called with no credentials at all: 401, naming the scheme to use."""

    status_code = 401

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="recserve"'}


class ModelNotFound(ServingError):
    status_code = 404


class Unavailable(ServingError):
    """The server cannot take the request now: queue full, timed out in queue, not ready, or
    shutting down. Every 503 says when to try again (``Retry-After``)."""

    status_code = 503

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ModelNotReady(Unavailable):
    """The model or version exists but is not loaded and ready (loading, unloading, failed to
    load, not served under the version policy, or the server is starting).

    The message says only that: why a version is not ready can name files, paths, checksums and
    library messages, which are for the log and the token-protected repository index, not for
    whoever calls the version.
    """


class Overloaded(Unavailable):
    """The version's queue is full."""


class QueueTimeout(Unavailable):
    """The request waited in the queue past its timeout and was never computed."""


class ShuttingDown(Unavailable):
    """The server is draining after SIGTERM."""


class InferenceFailed(ServingError):
    """ONNX Runtime failed on a request's rows."""

    status_code = 500


class ModelLoadError(Exception):
    """A version could not be loaded. The reason is logged and shown in the repository index to
    the admin token only; callers of the version are told it is not ready."""


def not_utf8(data: bytes | bytearray | memoryview) -> str | None:
    """``"not valid UTF-8 at byte N"`` if ``data`` is not UTF-8 text, else None.

    JSON parsers word an invalid byte as a string problem ("str is not valid UTF-8: surrogates
    not allowed", "invalid unicode code point"), which points a client at its strings rather than
    at the bytes it sent; this names the first offending byte of the body instead.
    """
    try:
        str(data, "utf-8")
    except UnicodeDecodeError as exc:
        return f"not valid UTF-8 at byte {exc.start}"
    return None


def describe_problems(
    errors: Iterable[Mapping[str, Any]], *, limit: int | None = None, whole: str = ""
) -> str:
    """Validation errors (pydantic's or FastAPI's ``.errors()``) as one line, each naming its field:
    ``k: Input should be less than or equal to 1000; user_id: Field required``.

    The one wording of every refusal that comes from validation (request bodies, path and query
    parameters, settings); ``whole`` names an error about the whole document, ``limit`` keeps the
    line short when a document has many.
    """
    problems = []
    for error in list(errors)[:limit]:
        field = ".".join(str(part) for part in error.get("loc", ())) or whole
        problems.append(f"{field}: {_problem(error)}")
    return "; ".join(problems)


def _problem(error: Mapping[str, Any]) -> str:
    """The message of one validation error; a body that is not UTF-8 says where it is not."""
    given = error.get("input")
    if error.get("type") == "json_invalid" and isinstance(given, bytes | bytearray):
        return not_utf8(given) or str(error.get("msg", ""))
    return str(error.get("msg", ""))
