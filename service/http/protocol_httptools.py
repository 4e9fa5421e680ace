"""uvicorn's httptools protocol with the edge's limits (service.http.protocol): the fast parser,
used whenever httptools is installed. A module of its own, so that the server imports httptools
only when it uses it."""

from __future__ import annotations

from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http.protocol import MALFORMED, UNSUPPORTED_CODING, Edge

# The part of llhttp's message for a transfer coding other than chunked.
_UNSUPPORTED_CODING = "invalid `Transfer-Encoding`"


class _Refused(Exception):
    """Raised in a parser callback to stop parsing a request :class:`Edge` refused."""


class EdgeHttpToolsProtocol(Edge, HttpToolsProtocol):
    def _cycle(self) -> Any:
        return self.cycle

    def _head_size(self) -> int:
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # The parser's callbacks: per request, so the base class is called without super().

    def on_headers_complete(self) -> None:
        if not self._head_done(len(self.headers)):
            raise _Refused
        HttpToolsProtocol.on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._message_done()
        HttpToolsProtocol.on_message_complete(self)

    def _feed(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with the parser's refusals answered by the edge."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if self._refusal is not None:
                self._refuse(*self._refusal)
            elif _UNSUPPORTED_CODING in str(exc):
                self._refuse(501, UNSUPPORTED_CODING, str(exc))
            else:
                self._refuse(400, MALFORMED, str(exc))
