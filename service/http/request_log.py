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
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Iterable

import orjson

REQUEST_ID_HEADER = b"x-request-id"
request_logger = logging.getLogger("recserve.request")

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
