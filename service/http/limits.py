"""What one connection may cost the server, and how a connection over those limits is refused.

:class:`EdgeLimits` are the settings the HTTP protocol (service.http.protocol) enforces on every
connection. :class:`RefusalLog` writes the refusals the protocol makes to the log, at most one line
per client address a minute, so that no client can flood it. :class:`OverCapacity` is the app a
connection opened beyond ``max_connections`` gets: health probes pass through (an orchestrator
must still see the server alive and ready), every other request is answered 503 with
``Retry-After``, by the same function as every other error (service.http.answers).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from service.http.answers import error_response
from service.http.request_body import discard_body
from service.settings import Settings

logger = logging.getLogger("service.http.protocol")

HEALTH_PREFIX = "/v2/health/"
RETRY_AFTER_S = 1
TOO_MANY_CONNECTIONS = "the server has too many open connections; retry shortly"


@dataclass(frozen=True)
class EdgeLimits:
    max_header_bytes: int
    max_header_count: int
    header_timeout_s: float
    body_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> EdgeLimits:
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_header_count=settings.max_header_count,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            keep_alive_timeout_s=settings.keep_alive_timeout_s,
            max_connections=settings.max_connections,
            max_body_bytes=settings.max_request_bytes,
        )


class RefusalLog:
    """One INFO line per client address per ``interval_s`` for the requests the edge refuses;
    the next line says how many refusals of that address it left out."""

    def __init__(self, interval_s: float = 60.0, addresses: int = 10_000) -> None:
        self.interval_s = interval_s
        self.addresses = addresses  # beyond this many, the record starts over (bounded memory)
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def note(self, client: tuple[str, int] | None, status: int, message: str, detail: str) -> None:
        host = client[0] if client else "-"
        now = time.monotonic()
        last = self._last.get(host)
        if last is not None and now - last < self.interval_s:
            self._left_out[host] = self._left_out.get(host, 0) + 1
            return
        if len(self._last) >= self.addresses:
            self._last.clear()
            self._left_out.clear()
        self._last[host] = now
        left_out = self._left_out.pop(host, 0)
        peer = f"{client[0]}:{client[1]}" if client else "-"
        logger.info(
            "refused a request from %s: %d %s%s%s",
            peer,
            status,
            message,
            f" ({detail})" if detail else "",
            f"; {left_out} more from this address since the last line" if left_out else "",
        )


REFUSALS = RefusalLog()


class OverCapacity:
    """The app of a connection opened beyond the cap: health probes are answered by ``app``,
    every other request 503 with ``Retry-After`` (its body read first, so the client reads the
    answer) and the connection is closed."""

    def __init__(self, app: ASGIApp, client: tuple[str, int] | None, max_body_bytes: int) -> None:
        self.app = app
        self.client = client
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(HEALTH_PREFIX):
            await self.app(scope, receive, send)
            return
        try:
            await discard_body(Request(scope, receive), self.max_body_bytes)
        except ClientDisconnect:
            return
        REFUSALS.note(self.client, 503, TOO_MANY_CONNECTIONS, "")
        headers = {"Retry-After": str(RETRY_AFTER_S), "Connection": "close"}
        await error_response(scope, 503, TOO_MANY_CONNECTIONS, headers)(scope, receive, send)
