"""The ASGI middleware that observes every HTTP request.

For each request it takes or makes the request id and returns it in ``X-Request-ID``, counts the
request in flight for draining (and asks clients to close the connection while draining), and
when the answer is sent counts it in ``recserve_requests_total`` by endpoint and status code and
times it in ``recserve_request_duration_seconds`` if it ran inference, from the request headers
received to the response sent. With ``request_log`` on it writes the request's JSON line.

An exception no handler turned into a response is answered 500 ``{"error": "internal server
error"}`` and logged with its traceback and the request id (service.http.answers); a client that
went away before its request was read is counted with status 499 (the code proxies use for it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http.answers import INTERNAL_ERROR, error_response
from service.http.request_log import (
    ERROR,
    MODEL,
    REQUEST_ID,
    REQUEST_ID_HEADER,
    VERSION,
    log_request,
    request_id,
)
from service.http.state import AppState

logger = logging.getLogger(__name__)

CLIENT_CLOSED = 499
_CLOSE = (b"connection", b"close")


class RequestObserver:
    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state
        self.metrics = state.metrics
        self.lifecycle = state.lifecycle
        self.log_requests = state.settings.request_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope["headers"])
        info: dict[str, Any] = scope.setdefault("state", {})
        info[REQUEST_ID] = rid
        id_header = (REQUEST_ID_HEADER, rid)
        lifecycle = self.lifecycle
        status = 0  # until the response starts

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), id_header]
                if lifecycle.draining:  # clients stop reusing the connection
                    headers.append(_CLOSE)
                message = {**message, "headers": headers}
            await send(message)

        lifecycle.request_started()
        try:
            await self.app(scope, receive, send_observed)
        except ClientDisconnect:
            if status:
                raise
            status = CLIENT_CLOSED
            info[ERROR] = "client disconnected"
            logger.debug("request %s: client disconnected", rid.decode("ascii"))
        except Exception as exc:
            if status:  # the response has started: the server aborts the connection
                raise
            answer = error_response(scope, 500, INTERNAL_ERROR, cause=exc)
            await answer(scope, receive, send_observed)
        finally:
            lifecycle.request_finished()
            self._observe(scope, info, status or 500, time.perf_counter() - started)

    def _observe(self, scope: Scope, info: dict[str, Any], status: int, seconds: float) -> None:
        route = scope.get("route")
        endpoint = getattr(route, "name", None) or "unmatched"
        model = info.get(MODEL, "")
        version = info.get(VERSION, "")
        self.metrics.observe_request(model, version, endpoint, status, seconds)
        if self.log_requests:
            log_request(
                request_id=info[REQUEST_ID],
                method=scope["method"],
                path=scope["path"],
                endpoint=endpoint,
                model=model,
                version=version,
                status=status,
                seconds=seconds,
                error=info.get(ERROR),
            )
