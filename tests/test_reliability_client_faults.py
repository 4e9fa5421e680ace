"""Misbehaving clients, end to end, over raw sockets: disconnects in the middle of the body or
while the request waits for its batch, and bodies trickled in slowly.

No work is done for a client that left, no batch is held up, nothing is left in flight (the
server still stops at once and cleanly), and well-behaved clients are served all along.
"""

from __future__ import annotations

import socket
import threading
import time

import httpx
import numpy as np
import pytest

from tests.factories import reference_scores
from tests.raw_http import connect, read_response, request_head
from tests.reliability_tools import (
    binary_scores,
    infer_body,
    json_body,
    metric_value,
    random_rows,
    start_heavy,
    wait_until,
)
from tests.server_process import ServerProcess, Servers

N_USERS, N_ITEMS = 50, 40
BATCH_ROWS = 1024
INFER = "/v2/models/heavy/infer"
Params = dict[str, np.ndarray]


@pytest.fixture(scope="module")
def served(
    module_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ServerProcess, Params]:
    """A server that, once the tests are done, must still stop at once, cleanly, with status 0:
    with no request left in flight (the grace period never runs out)."""
    repository = tmp_path_factory.mktemp("client-faults")
    return start_heavy(
        module_servers,
        repository,
        max_batch_rows=BATCH_ROWS,
        queue_capacity_rows=1_000_000,
        shutdown_grace_s=20,
        stop_timeout_s=60,
        forbidden=("grace period over", "Traceback", "Exception in ASGI"),
    )


def _stats(server: ServerProcess) -> dict[str, int]:
    entry = httpx.get(f"{server.url}/v2/models/heavy/stats").json()["model_stats"][0]
    return {
        "rows": entry["inference_count"],
        "success": entry["inference_stats"]["success"]["count"],
    }


def _check_served(server: ServerProcess, params: Params, seed: int) -> None:
    users, items = random_rows(16, N_USERS, N_ITEMS, seed=seed)
    body, headers = infer_body(users, items)
    response = httpx.post(server.url + INFER, content=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        binary_scores(response.content, response.headers),
        reference_scores(params, users, items),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.slow
def test_disconnect_in_the_middle_of_the_body(served: tuple[ServerProcess, Params]) -> None:
    server, params = served
    before = _stats(server)
    body, headers = infer_body(*random_rows(4096, N_USERS, N_ITEMS, seed=1))
    for cut in (0, 10, len(body) // 2, len(body) - 1):
        sock = connect(server.port)
        sock.sendall(request_head("POST", INFER, headers, len(body)) + body[:cut])
        time.sleep(0.05)  # the server is waiting for the rest
        sock.close()
    # A chunked body that stops after a chunk: no Content-Length to go by.
    sock = connect(server.port)
    head = request_head("POST", INFER, {**headers, "Transfer-Encoding": "chunked"}, None)
    sock.sendall(head + b"%x\r\n" % 100 + body[:100] + b"\r\n")
    time.sleep(0.05)
    sock.close()
    _check_served(server, params, seed=2)
    after = _stats(server)
    assert after["rows"] - before["rows"] == 16  # only the well-formed request was computed
    assert after["success"] - before["success"] == 1


@pytest.mark.slow
def test_disconnect_while_queued_drops_the_work(served: tuple[ServerProcess, Params]) -> None:
    """Clients that leave while their rows wait for a batch cost no computation."""
    server, params = served
    before = _stats(server)
    long_rows = 64 * BATCH_ROWS  # keeps the runner busy while the others queue behind it
    users, items = random_rows(long_rows, N_USERS, N_ITEMS, seed=3)
    long_body, long_headers = infer_body(users, items)
    long_reply: list[httpx.Response] = []
    runner = threading.Thread(
        target=lambda: long_reply.append(
            httpx.post(server.url + INFER, content=long_body, headers=long_headers, timeout=60)
        )
    )
    runner.start()
    queued = {"model": "heavy", "version": "1"}
    wait_until(lambda: metric_value(server.url, "recserve_queue_rows", queued) > 0, 30, "queued")

    leavers: list[socket.socket] = []
    for seed in range(8):
        body, headers = infer_body(*random_rows(4 * BATCH_ROWS, N_USERS, N_ITEMS, seed=10 + seed))
        sock = connect(server.port)
        sock.sendall(request_head("POST", INFER, headers, len(body)) + body)
        leavers.append(sock)
    wait_until(
        lambda: metric_value(server.url, "recserve_queue_rows", queued) >= 8 * 4 * BATCH_ROWS,
        30,
        "the leavers' rows queued",
    )
    for sock in leavers:
        sock.close()
    wait_until(
        lambda: metric_value(server.url, "recserve_queue_rows", queued) < 8 * 4 * BATCH_ROWS,
        30,
        "the leavers' rows dropped",
    )
    runner.join(60)
    assert long_reply and long_reply[0].status_code == 200, long_reply
    np.testing.assert_allclose(
        binary_scores(long_reply[0].content, long_reply[0].headers),
        reference_scores(params, users, items),
        rtol=1e-4,
        atol=1e-5,
    )
    wait_until(lambda: metric_value(server.url, "recserve_queue_rows", queued) == 0, 30, "empty")
    _check_served(server, params, seed=4)
    after = _stats(server)
    assert after["rows"] - before["rows"] == long_rows + 16, "rows of gone clients were computed"
    assert after["success"] - before["success"] == 2


@pytest.mark.slow
def test_slow_clients_trickling_bodies_hold_up_no_one(served: tuple[ServerProcess, Params]) -> None:
    server, params = served
    tricklers = []
    for seed in range(6):
        users, items = random_rows(8, N_USERS, N_ITEMS, seed=20 + seed)
        body = json_body(users.tolist(), items.tolist())
        sock = connect(server.port)
        sock.sendall(request_head("POST", INFER, {"Content-Type": "application/json"}, len(body)))
        tricklers.append((sock, body, users, items))

    sent = 0
    served_meanwhile = 0
    while any(sent < len(body) for _, body, _, _ in tricklers):
        for sock, body, _, _ in tricklers:
            sock.sendall(body[sent : sent + 16])
        sent += 16
        _check_served(server, params, seed=100 + sent)  # others are served between the bytes
        served_meanwhile += 1
        queued = metric_value(server.url, "recserve_queue_rows", {"model": "heavy"})
        assert queued == 0, "a half-received request is in the queue"
        time.sleep(0.02)
    for sock, _, users, items in tricklers:
        reply = read_response(sock)
        sock.close()
        assert reply.status == 200, reply.body
        scores = np.asarray(reply.json()["outputs"][0]["data"], dtype=np.float32)
        expected = reference_scores(params, users, items)
        np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert served_meanwhile >= 5
