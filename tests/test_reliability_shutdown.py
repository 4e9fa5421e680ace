"""SIGTERM, end to end: under more load than the grace period can finish, and while loading.

Readiness turns false at once; every request sent before the signal is answered, 200 with the
right scores or, for what is still queued when the grace period ends, 503 with ``Retry-After``;
the process exits 0 within the grace period. A load in progress, at startup or later, is
abandoned rather than waited for.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.factories import publish_random_version, reference_scores
from tests.raw_http import AsyncConnection, RawResponse
from tests.reliability_tools import (
    binary_scores,
    infer_body,
    metric_value,
    publish_heavy,
    random_rows,
    repository_index,
    start_heavy,
    wait_until,
    write_config,
)
from tests.server_process import ServerProcess, Servers

N_USERS, N_ITEMS = 50, 40
GRACE_S = 3.0
EXIT_MARGIN_S = 2.0  # process teardown after the grace period
TOKEN = "shutdown-token"
# A warmup of 40 runs of 8,192 rows through a wide tower: a load of tens of seconds.
SLOW_LOAD_CONFIG = {"warmup": {"batch_sizes": [8192] * 40}}
SLOW_TOWER = (1024, 1024)
HUGE_QUEUE = {"max_batch_rows": 1024, "queue_capacity_rows": 1_000_000}


@pytest.mark.slow
def test_sigterm_with_more_work_than_the_grace_period_answers_every_request(
    repository: Path, servers: Servers
) -> None:
    server, params = start_heavy(
        servers, repository, shutdown_grace_s=GRACE_S, request_timeout_s=120, **HUGE_QUEUE
    )
    clients, rows = 24, 32768  # about 800 batches: many times what the grace period computes
    requests = [random_rows(rows, N_USERS, N_ITEMS, seed=i) for i in range(clients)]
    not_ready: list[float] = []  # seconds from the signal to readiness 503

    async def main() -> tuple[list[RawResponse | BaseException], float, float]:
        async def one(users: np.ndarray, items: np.ndarray) -> RawResponse | BaseException:
            connection = AsyncConnection(server.port)
            body, headers = infer_body(users, items)
            try:
                return await asyncio.wait_for(
                    connection.request("POST", "/v2/models/heavy/infer", body, headers), 60
                )
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                return exc
            finally:
                await connection.close()

        tasks = [asyncio.create_task(one(users, items)) for users, items in requests]
        queued = {"model": "heavy", "version": "1"}
        while metric_value(server.url, "recserve_queue_rows", queued) < clients * rows / 2:
            await asyncio.sleep(0.05)  # most of the work is queued
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        probe = AsyncConnection(server.port)
        while True:  # readiness turns false at once
            status = (await probe.request("GET", "/v2/health/ready")).status
            if status == 503:
                not_ready.append(time.monotonic() - signalled)
                break
            await asyncio.sleep(0.01)
        await probe.close()
        replies = await asyncio.gather(*tasks)
        exit_status = await asyncio.to_thread(server.process.wait, 60)
        return list(replies), signalled, float(exit_status)

    replies, signalled, exit_status = asyncio.run(main())
    stopped_after = time.monotonic() - signalled
    log = server.log()
    assert exit_status == 0, log
    assert not_ready[0] < 1.0, f"readiness still true {not_ready[0]:.2f} s after SIGTERM"
    lost = [r for r in replies if not isinstance(r, RawResponse)]
    assert lost == [], f"accepted requests without a reply: {lost}"
    answered = [r for r in replies if isinstance(r, RawResponse)]
    assert {r.status for r in answered} <= {200, 503}
    served = 0
    for (users, items), reply in zip(requests, answered, strict=True):
        if reply.status == 200:
            served += 1
            expected = reference_scores(params, users, items)
            np.testing.assert_allclose(
                binary_scores(reply.body, reply.headers), expected, rtol=1e-4, atol=1e-5
            )
        else:
            assert int(reply.headers["retry-after"]) >= 1
            assert "shut" in reply.json()["error"]
    print(
        f"\nshutdown: {served} of {clients} requests served, {clients - served} answered 503; "
        f"exit 0 {stopped_after:.2f} s after SIGTERM (grace {GRACE_S:g} s)"
    )
    assert stopped_after < GRACE_S + EXIT_MARGIN_S
    assert served < clients, "the grace period was long enough for everything: not this test"
    assert "grace period over" in log
    assert "Cancel" not in log and "Traceback" not in log


def _slow_repository(repository: Path) -> None:
    publish_random_version(repository, "fast")
    write_config(repository, "slow", SLOW_LOAD_CONFIG)


def _abandoned_cleanly(server: ServerProcess, status: int) -> str:
    """The server's log, once it has been checked for a load abandoned at SIGTERM."""
    log = server.log()
    assert status == 0, log
    assert any("abandon" in line and "'slow' version 1" in line for line in log.splitlines()), log
    assert "loaded model 'slow'" not in log
    assert "Traceback" not in log
    return log


@pytest.mark.slow
def test_sigterm_while_a_model_loads_at_startup_exits_cleanly(
    repository: Path, servers: Servers
) -> None:
    _slow_repository(repository)
    publish_heavy(repository, "slow", SLOW_TOWER)
    server = servers.start(repository, wait=False, poll_interval_s=0)
    wait_until(lambda: "execution provider" in server.log(), 60, "loading started")
    time.sleep(1.0)  # into the slow model's load (tens of seconds)
    server.process.send_signal(signal.SIGTERM)
    log = _abandoned_cleanly(server, server.process.wait(20))  # the load would take far longer
    assert "loading model 'slow' version 1 abandoned" in log, log
    assert "received SIGTERM while starting" in log


@pytest.mark.slow
def test_sigterm_while_a_new_version_loads_exits_cleanly(
    repository: Path, servers: Servers
) -> None:
    _slow_repository(repository)
    server = servers.start(repository, poll_interval_s=0.1, env={"RECSERVE_ADMIN_TOKEN": TOKEN})
    publish_heavy(repository, "slow", SLOW_TOWER)
    wait_until(
        lambda: (
            {"name": "slow", "version": "1", "state": "LOADING", "reason": ""}
            in repository_index(server.url, TOKEN)
        ),
        30,
        "the slow version loading",
    )
    users, items = random_rows(8, N_USERS, N_ITEMS, seed=0)
    body, headers = infer_body(users, items)
    response = httpx.post(f"{server.url}/v2/models/fast/infer", content=body, headers=headers)
    assert response.status_code == 200  # what is loaded serves while the other loads
    server.process.send_signal(signal.SIGTERM)
    log = _abandoned_cleanly(server, server.process.wait(20))  # the load would take far longer
    assert "exception" not in log.lower()
