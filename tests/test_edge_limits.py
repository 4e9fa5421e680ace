"""The HTTP edge, end to end over raw sockets, for both HTTP parsers (httptools and h11).

What one connection may cost is bounded: a request head too long (20,000 headers of 1 KB) or
with too many fields is answered 431 as soon as the limit is passed, a head or a body sent too
slowly 408, an idle keep-alive connection is closed, and connections beyond the cap get 503 with
``Retry-After`` while the health probes are still answered. Eight clients holding 50 MB header
blocks leave the server's memory where it was. What the parser refuses is answered like every
other error, ``{"error": ...}`` with the right status, and logged once per client address, at
INFO, never as a flood of warnings.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.factories import publish_random_version
from tests.raw_http import RawResponse, connect, read_response, request_head
from tests.reliability_tools import json_body, random_rows
from tests.server_process import ServerProcess, Servers, rss_bytes

PARSERS = ("httptools", "h11")
TIMEOUT_S = 1.5  # the head's, the body's and (1 s) the keep-alive's, for the server under test
INFER = "/v2/models/recs/infer"
LIVE = "/v2/health/live"
HOST = b"Host: 127.0.0.1\r\n"
MiB = 1024 * 1024


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("edge-repo")
    publish_random_version(path, "recs")
    return path


@pytest.fixture(scope="module", params=PARSERS)
def parser(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def server(parser: str, module_servers: Servers, repository: Path) -> ServerProcess:
    """A server reading HTTP with ``parser``, with short deadlines."""
    return module_servers.start(
        repository,
        http_parser=parser,
        header_timeout_s=TIMEOUT_S,
        body_timeout_s=TIMEOUT_S,
        keep_alive_timeout_s=1,
        poll_interval_s=0,
        forbidden=("Invalid HTTP request received", "Traceback", "Exception in ASGI"),
    )


def exchange(port: int, data: bytes, *, closes: bool = False) -> RawResponse:
    """Send ``data`` on a new connection (from a thread, as the server may answer before it has
    all of it) and read the answer; with ``closes``, check that the server then closes it."""
    sock = connect(port, 10)
    sender = threading.Thread(target=_send_quietly, args=(sock, data))
    sender.start()
    try:
        reply = read_response(sock)
        if closes:
            assert closed_by_server(sock), "the connection was left open"
        return reply
    finally:
        sock.close()
        sender.join(10)


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the server closed the connection: a refusal
        sock.sendall(data)


def closed_by_server(sock: socket.socket) -> bool:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def assert_error(reply: RawResponse, status: int) -> str:
    """The message of a JSON error answer of ``status``."""
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json", reply
    message = reply.json()["error"]
    assert isinstance(message, str) and message
    return message


def head_of(*fields: bytes, method: bytes = b"GET", path: bytes = LIVE.encode()) -> bytes:
    return method + b" " + path + b" HTTP/1.1\r\n" + HOST + b"".join(fields) + b"\r\n"


def test_twenty_thousand_headers_of_1kb_are_431(server: ServerProcess) -> None:
    fields = [b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(20_000)]
    started = time.monotonic()
    reply = exchange(server.port, head_of(*fields), closes=True)
    assert "head exceeds the limit of 65536 bytes" in assert_error(reply, 431)
    assert time.monotonic() - started < 5


def test_too_many_header_fields_are_431(server: ServerProcess) -> None:
    reply = exchange(server.port, head_of(*(b"X-%d: 1\r\n" % i for i in range(101))), closes=True)
    assert "more than 100 header fields" in assert_error(reply, 431)
    reply = exchange(server.port, head_of(*(b"X-%d: 1\r\n" % i for i in range(90))))
    assert reply.status == 200  # within the limit (with Host, 91 fields)


def test_request_line_of_100_kb_is_414(server: ServerProcess) -> None:
    reply = exchange(server.port, head_of(path=b"/" + b"a" * 100_000), closes=True)
    assert "request line exceeds the limit" in assert_error(reply, 414)


# Requests the HTTP parser refuses: the status each parser answers; None where that parser
# accepts the request, which the app then answers (also JSON).
PARSER_CASES: dict[str, tuple[bytes, dict[str, int | None]]] = {
    "content-length-and-transfer-encoding": (
        head_of(b"Content-Length: 5\r\n", b"Transfer-Encoding: chunked\r\n", method=b"POST")
        + b"0\r\n\r\n",
        {"httptools": 400, "h11": 400},
    ),
    "negative-content-length": (
        head_of(b"Content-Length: -1\r\n", method=b"POST"),
        {"httptools": 400, "h11": 400},
    ),
    "non-numeric-content-length": (
        head_of(b"Content-Length: abc\r\n", method=b"POST"),
        {"httptools": 400, "h11": 400},
    ),
    "duplicated-content-length": (
        head_of(b"Content-Length: 1\r\n", b"Content-Length: 2\r\n", method=b"POST") + b"ab",
        {"httptools": 400, "h11": 400},
    ),
    "bad-chunk-size": (
        head_of(b"Transfer-Encoding: chunked\r\n", method=b"POST") + b"zz\r\nab\r\n0\r\n\r\n",
        {"httptools": 400, "h11": 400},
    ),
    "transfer-encoding-gzip": (
        head_of(b"Transfer-Encoding: gzip\r\n", method=b"POST"),
        {"httptools": 501, "h11": 501},
    ),
    "nul-byte": (head_of(b"X-Nul: a\x00b\r\n"), {"httptools": 400, "h11": 400}),
    "bare-lf": (head_of().replace(b"\r\n", b"\n"), {"httptools": 400, "h11": None}),
    "unknown-method": (head_of(method=b"BREW"), {"httptools": 400, "h11": None}),
    "tls-on-the-plain-port": (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",
        {"httptools": 400, "h11": 400},
    ),
}


@pytest.mark.parametrize("case", sorted(PARSER_CASES))
def test_parser_refusals_are_json_errors(server: ServerProcess, parser: str, case: str) -> None:
    data, expected = PARSER_CASES[case]
    status = expected[parser]
    reply = exchange(server.port, data, closes=status is not None)
    if status is None:  # this parser accepts it: the app answers, as for any request
        assert reply.headers["content-type"] == "application/json", reply
        assert reply.status in (200, 405), reply
        return
    message = assert_error(reply, status)
    assert "uvicorn" not in message.lower() and "parser" not in message.lower()


def test_slow_head_and_slow_body_get_408_while_others_are_served(server: ServerProcess) -> None:
    slow_head = connect(server.port, 10)
    slow_head.sendall(b"GET " + LIVE.encode() + b" HTTP/1.1\r\n")
    body = json_body(*(rows.tolist() for rows in random_rows(4, 50, 40, seed=1)))
    slow_body = connect(server.port, 10)
    slow_body.sendall(request_head("POST", INFER, {"Content-Type": "application/json"}, len(body)))
    started = time.monotonic()
    latencies = []
    sent = 0
    while time.monotonic() - started < TIMEOUT_S + 1.0:  # trickle past the deadlines
        for sock, data in ((slow_head, b"X"), (slow_body, body[sent : sent + 1])):
            with contextlib.suppress(OSError):  # closed by the server: what this test expects
                sock.sendall(data)
        sent += 1
        began = time.monotonic()
        reply = exchange(server.port, request_head("POST", INFER, None, len(body)) + body)
        latencies.append(time.monotonic() - began)
        assert reply.status == 200, reply
        time.sleep(0.1)
    for sock, what in ((slow_head, "head"), (slow_body, "body")):
        reply = read_response(sock)
        assert f"request {what} not received within 1.5 s" in assert_error(reply, 408)
        assert closed_by_server(sock)
        sock.close()
    assert len(latencies) >= 10
    assert float(np.median(latencies)) < 0.1 and max(latencies) < 1.0, latencies


def test_idle_keep_alive_connection_is_closed(server: ServerProcess) -> None:
    sock = connect(server.port, 10)
    sock.sendall(head_of())
    assert read_response(sock).status == 200
    started = time.monotonic()
    assert closed_by_server(sock)  # without a second request
    assert 0.8 < time.monotonic() - started < 3.0
    sock.close()


def test_connection_that_sends_nothing_is_closed_after_the_head_timeout(
    server: ServerProcess,
) -> None:
    sock = connect(server.port, 10)
    started = time.monotonic()
    assert sock.recv(65536) == b""  # closed, with no answer to a request never sent
    assert TIMEOUT_S - 0.2 < time.monotonic() - started < TIMEOUT_S + 1.5
    sock.close()


def test_refusals_are_logged_once_per_client_at_info(server: ServerProcess) -> None:
    before = server.log().count("refused a request from 127.0.0.1:")
    for _ in range(30):
        exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n", closes=True)
    log = server.log()
    assert log.count("refused a request from 127.0.0.1:") - before <= 1
    assert "Invalid HTTP request received" not in log
    assert all(line.startswith("INFO") for line in log.splitlines() if "refused a request" in line)


def test_header_flood_leaves_memory_where_it_was(server: ServerProcess) -> None:
    idle = rss_bytes(server.pid)
    line = b"X-Filler: " + b"a" * 1000 + b"\r\n"
    block = b"GET / HTTP/1.1\r\n" + HOST + line * (50 * MiB // len(line))  # never finished
    socks = [connect(server.port, 20) for _ in range(8)]
    senders = [threading.Thread(target=_send_quietly, args=(sock, block)) for sock in socks]
    for sender in senders:
        sender.start()
    peak = idle
    while any(sender.is_alive() for sender in senders):
        peak = max(peak, rss_bytes(server.pid))
        time.sleep(0.02)
    for sock in socks:
        sock.close()
    time.sleep(0.5)
    after = rss_bytes(server.pid)
    print(f"\nRSS idle {idle / MiB:.0f} MiB, peak {peak / MiB:.0f}, after {after / MiB:.0f}")
    assert peak < idle * 1.1 + 8 * MiB
    assert after < idle * 1.1


@pytest.fixture
def capped(servers: Servers, repository: Path) -> ServerProcess:
    return servers.start(repository, max_connections=4, poll_interval_s=0)


@pytest.fixture
def open_connections(capped: ServerProcess) -> Iterator[list[socket.socket]]:
    """Four connections held open (each answered once): the cap of the ``capped`` server."""
    socks = [connect(capped.port, 10) for _ in range(4)]
    for sock in socks:
        sock.sendall(head_of())
        assert read_response(sock).status == 200
    yield socks
    for sock in socks:
        sock.close()


def test_connections_beyond_the_cap_get_503_but_health_is_answered(
    capped: ServerProcess, open_connections: list[socket.socket]
) -> None:
    body = json_body([1], [2])
    reply = exchange(capped.port, request_head("POST", INFER, None, len(body)) + body, closes=True)
    assert "too many open connections" in assert_error(reply, 503)
    assert int(reply.headers["retry-after"]) >= 1
    for probe in ("/v2/health/live", "/v2/health/ready"):
        reply = exchange(capped.port, request_head("GET", probe))
        assert reply.status == 200, reply
    for sock in open_connections:  # those within the cap are served as ever
        sock.sendall(request_head("POST", INFER, None, len(body)) + body)
        assert read_response(sock).status == 200
    open_connections.pop().close()
    time.sleep(0.2)
    reply = exchange(capped.port, request_head("POST", INFER, None, len(body)) + body)
    assert reply.status == 200, reply
