"""Reading a request body within the size limit, undoing ``Content-Encoding: gzip|deflate``.

The limit holds three times: against ``Content-Length`` before anything is read, while the body
streams in, and on the decompressed size, so neither a large upload nor a small gzip bomb is ever
held whole in memory.

A client that disconnects after sending its body is noticed by :func:`while_connected` while its
request waits for the batcher: its queued rows are then dropped, never computed.

A request refused before its body is needed (503 while draining, or beyond the connection cap)
still has its body read and dropped by :func:`discard_body` before the answer: a server that
closes a connection with unread bytes makes the kernel reset it, and a client still sending its
upload then sees that reset instead of the answer.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import ClientDisconnect, Request

from service.errors import InvalidInput, PayloadTooLarge

_T = TypeVar("_T")
WATCH_AFTER_S = 0.05
# How long a refused request's body may take to be read and dropped before its answer is sent.
DISCARD_WITHIN_S = 2.0

# zlib window bits: 16 + MAX_WBITS reads a gzip wrapper, MAX_WBITS a zlib wrapper.
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, decompressed, at most ``limit`` bytes; 413 beyond, 400 if corrupt."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise InvalidInput(
            f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or identity"
        )
    return decompress(body, wbits, limit, encoding)


async def discard_body(request: Request, limit: int, within_s: float = DISCARD_WITHIN_S) -> bool:
    """Read and drop the request's body, at most ``limit`` bytes and within ``within_s``, so that
    the answer sent without it reaches the client; False if the body was longer or slower (the
    answer is sent anyway). A client that leaves meanwhile raises ``ClientDisconnect``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return False
    received = 0
    try:
        async with asyncio.timeout(within_s):
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    return False
    except TimeoutError:
        return False
    return True


def decompress(data: bytes, wbits: int, limit: int, encoding: str) -> bytes:
    """Inflate ``data``, refusing output beyond ``limit`` bytes without producing more of it."""
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"request body is not valid {encoding} data: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed request body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise InvalidInput(f"request body is truncated {encoding} data")
    if inflater.unused_data:
        raise InvalidInput(f"request body has trailing bytes after the {encoding} data")
    return out


async def while_connected(request: Request, work: Awaitable[_T]) -> _T:
    """Await ``work`` (after the body was read); cancel it if the client disconnects first.

    Cancelling the wait drops the request's rows that are still queued, so a client that gave
    up costs no computation; Starlette's ``ClientDisconnect`` is raised instead of a result. The
    connection is watched only once ``work`` has taken ``WATCH_AFTER_S``: a quick answer costs no
    watching, a request that waits for its batch is abandoned as soon as its client leaves.
    """
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        try:
            while (await request.receive())["type"] != "http.disconnect":
                pass
        except Exception:  # the server cannot tell: keep computing
            return
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(WATCH_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:
            raise ClientDisconnect() from None
        raise
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()
