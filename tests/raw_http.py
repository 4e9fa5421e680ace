"""HTTP/1.1 over plain sockets: requests sent exactly as written (no client-side normalisation), a
client that does as little work per request as it can (load generators share the server's cores),
and byte-level control for the tests of misbehaving clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

HOST = "127.0.0.1"


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def connect(port: int, timeout_s: float = 30.0) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout_s)


def request_head(
    method: str, path: str, headers: Mapping[str, str] | None = None, content_length: int | None = 0
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """The status and the headers of a response head (up to the blank line)."""
    status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def read_response(sock: socket.socket) -> RawResponse:
    """Read one HTTP/1.1 response with a Content-Length body (raises on a closed connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response; got {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status, headers = parse_head(head)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the middle of a response body")
        rest += chunk
    return RawResponse(status, headers, rest[:length])


class AsyncConnection:
    """One keep-alive HTTP/1.1 connection with as little client work as possible per request.

    With ``reconnect``, it behaves as HTTP clients do for a long run: a connection left idle for
    longer than the server keeps it (uvicorn: 5 s) is not reused, and one the server closed just
    as it was reused is reopened and the request sent again, once (the server closed it before
    reading the request). Without it (the tests), every dropped connection is the caller's to see.
    """

    IDLE_S = 4.0

    def __init__(self, port: int, *, reconnect: bool = False) -> None:
        self.port = port
        self.reconnect = reconnect
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        if not self.reconnect:
            return await self._exchange(method, path, body, headers)
        if self._writer is not None and time.monotonic() - self._last_used > self.IDLE_S:
            await self.close()
        reused = self._writer is not None
        try:
            return await self._exchange(method, path, body, headers)
        except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise
            await self.close()
            return await self._exchange(method, path, body, headers)

    async def _exchange(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None
    ) -> RawResponse:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        self._writer.write(request_head(method, path, headers, len(body)) + body)
        await self._writer.drain()
        status, parsed = parse_head(await self._reader.readuntil(b"\r\n\r\n"))
        content = await self._reader.readexactly(int(parsed.get("content-length", "0")))
        self._last_used = time.monotonic()
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return RawResponse(status, parsed, content)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None
