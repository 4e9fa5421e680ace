"""The edge's HTTP/1.1 protocol over h11 (used when httptools is not installed): uvicorn's h11
protocol with the rules of :class:`service.http.protocol.Edge`."""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from service.http.protocol import BOTH_LENGTHS, MALFORMED, UNSUPPORTED_CODING, Edge


class _H11Connection(h11.Connection):
    """h11's connection, telling :class:`EdgeH11Protocol` when a request's head and its end are
    in, and keeping the error it refused a request with."""

    def __init__(self, edge: EdgeH11Protocol, max_head_bytes: int) -> None:
        super().__init__(h11.SERVER, max_head_bytes)
        self.edge: EdgeH11Protocol | None = edge  # None once the connection is lost
        self.error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise
        edge = self.edge
        if edge is not None:
            if type(event) is h11.Request:
                if not edge._request_in(event):
                    self.error = h11.RemoteProtocolError("refused at the edge")
                    raise self.error
            elif type(event) is h11.EndOfMessage:
                edge._message_done()
        return event


class EdgeH11Protocol(Edge, H11Protocol):
    """uvicorn's h11 protocol with the edge's limits (used when httptools is not installed)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _H11Connection(self, self.limits.max_header_bytes)
        self._request: h11.Request | None = None

    def _cycle(self) -> Any:
        return self.cycle

    def _head_size(self) -> int:
        request = self._request
        assert request is not None
        return len(request.target) + sum(len(k) + len(v) + 4 for k, v in request.headers)

    def _request_in(self, request: h11.Request) -> bool:
        self._request = request
        if not self._head_done(len(request.headers)):
            return False
        names = {name for name, _ in request.headers}
        if b"content-length" in names and b"transfer-encoding" in names:
            self._refusal = 400, BOTH_LENGTHS
            return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.conn.edge = None  # type: ignore[attr-defined]

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what h11 refused, made the edge's."""
        error = self.conn.error  # type: ignore[attr-defined]
        if self._refusal is not None:
            self._refuse(*self._refusal)
        elif error is not None and error.error_status_hint == 431:
            self._refuse(*self._long_head())
        elif error is not None and error.error_status_hint == 501:
            self._refuse(501, UNSUPPORTED_CODING, str(error))
        else:
            self._refuse(400, MALFORMED, str(error or msg)[:200])
