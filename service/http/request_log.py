"""Request ids and the one JSON line per request (``settings.request_log``).

Every response carries ``X-Request-ID``: the caller's, when it sent a usable one (1 to 128
visible ASCII characters), else a new one: 32 hex digits, a random per-process prefix and a
counter, unique without a system call per request. The id names the request in the error log
and in its request log line.

Request log lines go to the ``recserve.request`` logger at INFO, one JSON object each::

    {"ts": "2024-05-01T12:00:00.123Z", "request_id": "...", "method": "POST",
     "path": "/v1/models/demo/score", "endpoint": "score", "model": "demo", "version": "3",
     "status": 200, "duration_ms": 1.234, "pid": 4242}

with ``"error": "<message>"`` added to answers that carry one.

What a request's line carries beyond the request itself is noted in the request's
``scope["state"]`` (``request.state``) as it is served: the request id, the model and version it
was served by (:func:`set_labels`, also the labels of its metrics) and the error it was answered
with (:func:`note_error`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, MutableMapping
from typing import Any

import orjson
from starlette.types import Scope

REQUEST_ID_HEADER = b"x-request-id"
request_logger = logging.getLogger("recserve.request")

# Keys of the request's ``scope["state"]`` (``request.state``) that serving fills in.
REQUEST_ID = "request_id"
ERROR = "error"
MODEL = "metric_model"
VERSION = "metric_version"


def note_error(request_state: MutableMapping[str, Any], message: str) -> None:
    """Record an answered error's message (``scope["state"]``) for the request log line."""
    request_state[ERROR] = message


def set_labels(request_state: MutableMapping[str, Any], model: str, version: str) -> None:
    """Model and version labels of the request's metrics and log line; only for a found model."""
    request_state[MODEL] = model
    request_state[VERSION] = version


def request_id_of(scope: Scope) -> str:
    value = scope.get("state", {}).get(REQUEST_ID)
    return value.decode("ascii") if isinstance(value, bytes) else "-"


_USABLE_ID = re.compile(rb"[!-~]{1,128}")


class _IdSource:
    """Random prefix plus counter; the prefix is drawn again in a forked child."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.prefix = os.urandom(8).hex().encode()
        self.counter = itertools.count(1)

    def new(self) -> bytes:
        return b"%s%016x" % (self.prefix, next(self.counter))


_ids = _IdSource()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.reset)


def new_request_id() -> bytes:
    return _ids.new()


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The caller's ``X-Request-ID`` if usable, else a new id (ASGI headers: lower-case names)."""
    for name, value in headers:
        if name == REQUEST_ID_HEADER:
            if _USABLE_ID.fullmatch(value):
                return value
            break
    return _ids.new()


def _timestamp(now: float) -> str:
    seconds = int(now)
    millis = int((now - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def log_request(
    *,
    request_id: bytes,
    method: str,
    path: str,
    endpoint: str,
    model: str,
    version: str,
    status: int,
    seconds: float,
    error: str | None,
) -> None:
    """Write one request's JSON line."""
    line: dict[str, object] = {
        "ts": _timestamp(time.time()),
        "request_id": request_id.decode("ascii"),
        "method": method,
        "path": path,
        "endpoint": endpoint,
        "model": model,
        "version": version,
        "status": status,
        "duration_ms": round(seconds * 1e3, 3),
        "pid": os.getpid(),
    }
    if error is not None:
        line["error"] = error
    request_logger.info(orjson.dumps(line).decode())
