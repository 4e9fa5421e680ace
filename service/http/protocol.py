"""The server's HTTP/1.1 protocol: uvicorn's, with limits at the edge and the one error contract.

uvicorn alone reads a request head without bound (httptools has no header limit at all), waits
forever for a client that sends its head or its body slowly, and answers what its parser refuses
with a plain-text 400 and a WARNING each time. On every connection, whichever parser reads it:

- a head longer than ``max_header_bytes`` is answered 431 (414 when the request line alone is
  longer) as soon as that many bytes are in, so no more of it is held; more than
  ``max_header_count`` header fields, 431;
- a head not in within ``header_timeout_s`` (from the connection's opening or the request's first
  byte) or a body not in within ``body_timeout_s`` of its head is answered 408 (a new connection
  that sent nothing at all is closed without an answer);
- an idle keep-alive connection is closed after ``keep_alive_timeout_s``;
- beyond ``max_connections`` open in this worker, requests other than the health probes are
  answered 503 with ``Retry-After`` (service.http.limits.OverCapacity);
- a request the parser refuses (framing, bytes that are not HTTP/1.1) is answered 400 (501 for a
  transfer coding other than chunked), with Content-Length and Transfer-Encoding together
  refused by both parsers;
- at shutdown (the grace period is over) a client still sending its body is cut off.

Each refusal is ``{"error": ...}`` (service.http.answers.error_bytes), logged at INFO with the
client's address at most once per address a minute (service.http.limits.RefusalLog), and ends
the connection: the server half-closes it and reads and drops what the client still sends for
a moment (at most ``LINGER_BYTES``, ``LINGER_S``), so that the client reads the answer rather
than a reset.

The rules live in :class:`Edge`, shared by the h11 protocol (service.http.protocol_h11) and the
httptools one (service.http.protocol_httptools); service.http.edge picks one for uvicorn. Per
request they cost a few comparisons and no timer when the request arrives in one read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, ClassVar

from service.http.answers import error_bytes
from service.http.limits import REFUSALS, EdgeLimits, OverCapacity

if TYPE_CHECKING:
    from uvicorn._types import ASGI3Application
    from uvicorn.protocols.http.flow_control import FlowControl
    from uvicorn.server import ServerState

    class _Uvicorn(asyncio.Protocol):
        """What :class:`Edge` uses of uvicorn's protocols (both have it)."""

        transport: asyncio.Transport
        flow: FlowControl
        loop: asyncio.AbstractEventLoop
        app: ASGI3Application
        client: tuple[str, int] | None
        server_state: ServerState
        timeout_keep_alive: int

        def shutdown(self) -> None: ...

else:
    _Uvicorn = asyncio.Protocol

MALFORMED = "malformed HTTP request"
UNSUPPORTED_CODING = "unsupported Transfer-Encoding: only chunked is accepted"
BOTH_LENGTHS = "request has both Content-Length and Transfer-Encoding"
LINGER_S = 2.0
LINGER_BYTES = 4 * 1024 * 1024
_UVICORN_PARSER_WARNING = "Invalid HTTP request received."


class Edge(_Uvicorn):
    """The limits and refusals both parsers' protocols add to uvicorn's (see the module)."""

    limits: ClassVar[EdgeLimits]  # set on the class :func:`edge_protocol` makes

    # Per connection; class attributes as defaults so that uvicorn's __init__ stays as it is.
    _head_pending = True  # the next bytes belong to a request head
    _head_bytes = 0  # bytes received since that head began (checked once per read)
    _line_done = False  # its request line has ended
    _line_bytes = 0  # and was this long
    _timer: asyncio.TimerHandle | None = None  # the head's, the body's, or the lingering's
    _refusal: tuple[int, str] | None = None  # a refusal decided inside a parser callback
    _linger_left = -1  # bytes still dropped after a refusal; -1 before any refusal

    def _cycle(self) -> Any:
        """The current request's uvicorn cycle, if any."""
        raise NotImplementedError

    def _head_size(self) -> int:
        """The exact size of the head just parsed (request line and header fields)."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        limits = self.limits
        self.timeout_keep_alive = limits.keep_alive_timeout_s  # type: ignore[assignment]
        self._timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)
        if len(self.server_state.connections) > limits.max_connections:
            over = OverCapacity(self.app, self.client, limits.max_body_bytes)  # type: ignore[arg-type]
            self.app = over  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._linger_left >= 0:
            self._linger_left -= len(data)
            if self._linger_left < 0:
                self.transport.close()
            return
        if self._head_pending:
            if not self._line_done and (end := data.find(b"\n")) >= 0:
                self._line_done = True
                self._line_bytes = self._head_bytes + end
            self._head_bytes += len(data)
        self._feed(data)
        if self._head_pending:
            if self._head_bytes:  # part of a head is in (usually a request comes in one read)
                self._head_partly_in()
        elif self._timer is None and self._linger_left < 0:  # a body is still coming
            self._timer = self.loop.call_later(self.limits.body_timeout_s, self._body_timeout)

    def _head_partly_in(self) -> None:
        if self._linger_left >= 0 or self.transport.is_closing():
            return
        if self._head_bytes > self.limits.max_header_bytes:
            self._refuse(*self._long_head())
        elif self._timer is None:
            self._timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timeout)

    def _feed(self, data: bytes) -> None:
        """Hand ``data`` to the parser: uvicorn's ``data_received``."""
        super().data_received(data)

    def shutdown(self) -> None:
        cycle = self._cycle()
        if self._linger_left >= 0 or (
            not self._head_pending and cycle is not None and not cycle.response_complete
        ):
            self.transport.close()  # refused, or still sending its body: the grace period is over
            return
        super().shutdown()

    # Called by the parser-specific protocols.

    def _head_done(self, fields: int) -> bool:
        """A request's head is in: True to go on, False with ``_refusal`` set if over a limit."""
        if self._timer is not None:
            self._cancel_timer()
        limits = self.limits
        if fields > limits.max_header_count:
            self._refusal = 431, f"request has more than {limits.max_header_count} header fields"
            return False
        # Only when the reads were longer than the limit is the head itself measured.
        if self._head_bytes > limits.max_header_bytes and (
            self._head_size() > limits.max_header_bytes
        ):
            self._refusal = self._long_head()
            return False
        self._head_pending = False
        return True

    def _message_done(self) -> None:
        """A request's body is in: what comes next is the next request's head."""
        self._head_pending = True
        self._head_bytes = 0
        self._line_done = False
        if self._timer is not None:
            self._cancel_timer()

    def _refuse(self, status: int, message: str, detail: str = "") -> None:
        """Answer ``status`` ``{"error": message}``, log it (rate-limited), end the connection."""
        if self._linger_left >= 0 or self.transport.is_closing():
            return
        cycle = self._cycle()
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # an answer is on its way: no second one
                self.transport.close()
                return
            cycle.disconnected = True  # the app's answer, if it comes, is not written
            cycle.message_event.set()
        self._cancel_timer()
        self.transport.write(error_bytes(status, message))
        REFUSALS.note(self.client, status, message, detail)
        self._linger_left = LINGER_BYTES
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _long_head(self) -> tuple[int, str]:
        limit = self.limits.max_header_bytes
        if not self._line_done or self._line_bytes > limit:
            return 414, f"request line exceeds the limit of {limit} bytes"
        return 431, f"request head exceeds the limit of {limit} bytes"

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timeout(self) -> None:
        self._timer = None
        if not self._head_pending:
            return
        if not self._head_bytes:  # nothing sent: closed without an answer, as an idle keep-alive
            self.transport.close()  # connection is (a client may be sending a request just now)
            return
        seconds = self.limits.header_timeout_s
        self._refuse(408, f"request head not received within {seconds:g} s")

    def _body_timeout(self) -> None:
        self._timer = None
        cycle = self._cycle()
        if cycle is not None and cycle.response_complete:  # answered without all of its body
            self.transport.close()
        elif not self._head_pending:
            seconds = self.limits.body_timeout_s
            self._refuse(408, f"request body not received within {seconds:g} s")


class QuietParserWarning(logging.Filter):
    """Drops uvicorn's WARNING for each request its parser refuses: :class:`Edge` logs those."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _UVICORN_PARSER_WARNING
