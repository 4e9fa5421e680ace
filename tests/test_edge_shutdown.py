"""SIGTERM with request bodies in flight, end to end over raw sockets.

An upload that arrives after the signal has its body read before the 503 is written, so its
client reads the 503 (with ``Retry-After``) instead of a reset; clients still sending their bodies
when the grace period ends are cut off, and the process exits within the grace period.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.factories import publish_random_version
from tests.raw_http import connect, read_response, request_head
from tests.reliability_tools import wait_until
from tests.server_process import ServerProcess, Servers

INFER = "/v2/models/recs/infer"
GRACE_S = 3.0
EXIT_MARGIN_S = 0.3  # the process exits within the grace period; this much is for the test's clock
FORBIDDEN = ("Traceback", "Exception in ASGI", "Cancel")


@pytest.fixture
def server(repository: Path, servers: Servers) -> ServerProcess:
    publish_random_version(repository, "recs")
    return servers.start(
        repository, shutdown_grace_s=GRACE_S, poll_interval_s=0, forbidden=FORBIDDEN
    )


def start_uploads(server: ServerProcess, count: int, length: int) -> list[socket.socket]:
    """``count`` uploads of ``length`` bytes whose heads and first byte are sent: each is a
    request in flight, reading its body."""
    socks = []
    for _ in range(count):
        sock = connect(server.port, 10)
        head = request_head("POST", INFER, {"Content-Type": "application/json"}, length)
        sock.sendall(head + b"{")
        socks.append(sock)
    time.sleep(0.5)  # the server has read their heads: they are in flight
    return socks


def trickle(socks: list[socket.socket]) -> int:
    """One more byte on each upload; how many connections the server has not closed yet."""
    open_ = 0
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.sendall(b" ")
            open_ += 1
    return open_


def sigterm(server: ServerProcess) -> float:
    """Send SIGTERM and wait until the server drains (readiness 503); when it was sent."""
    server.process.send_signal(signal.SIGTERM)
    sent = time.monotonic()

    def draining() -> bool:
        return httpx.get(f"{server.url}/v2/health/ready").status_code == 503

    wait_until(draining, 5, "readiness 503 after SIGTERM")
    return sent


def test_upload_sent_after_sigterm_reads_its_503(server: ServerProcess) -> None:
    slow = start_uploads(server, 1, 1000)  # keeps the server draining meanwhile
    sigterm(server)
    body = b" " * 1_000_000
    for _ in range(3):
        sock = connect(server.port, 10)
        sock.sendall(request_head("POST", INFER, {"Content-Type": "application/json"}, len(body)))
        for start in range(0, len(body), 65536):  # as a client on a network sends it
            sock.sendall(body[start : start + 65536])
            time.sleep(0.002)
        reply = read_response(sock)
        sock.close()
        assert reply.status == 503, reply
        assert "shutting down" in reply.json()["error"]
        assert int(reply.headers["retry-after"]) >= 1
        assert reply.headers["connection"] == "close"
    slow[0].sendall(b" " * 998 + b"}")  # accepted before the signal: still answered
    assert read_response(slow[0]).status == 400  # (an empty V2 request)
    slow[0].close()
    assert server.process.wait(GRACE_S + 5) == 0


def test_grace_period_is_held_with_fifty_slow_uploads(server: ServerProcess) -> None:
    uploads = start_uploads(server, 50, 100_000)
    signalled = sigterm(server)
    while server.process.poll() is None and time.monotonic() - signalled < GRACE_S + 5:
        trickle(uploads)
        time.sleep(0.05)
    stopped_after = time.monotonic() - signalled
    assert server.process.wait(5) == 0
    print(f"\nexit {stopped_after:.2f} s after SIGTERM with 50 slow uploads (grace {GRACE_S:g} s)")
    assert stopped_after < GRACE_S + EXIT_MARGIN_S
    assert trickle(uploads) == 0 or all(_closed(sock) for sock in uploads)
    for sock in uploads:
        sock.close()


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(1)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
