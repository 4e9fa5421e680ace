"""Overload, end to end: far more concurrent requests than the queue holds.

Every request gets exactly one reply, 200 with the right scores or 503 with ``Retry-After``; none
waits past its timeout; refused requests are never computed; health checks answer throughout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.factories import reference_scores
from tests.raw_http import AsyncConnection, RawResponse
from tests.reliability_tools import (
    binary_scores,
    infer_body,
    metric_value,
    random_rows,
    score_body,
    start_heavy,
)
from tests.server_process import ServerProcess, Servers

N_USERS, N_ITEMS = 50, 40
ROWS = 1024  # per request: one batch each
QUEUE_ROWS = 4 * ROWS
TIMEOUT_S = 0.5  # the server's queue timeout
REPLY_LIMIT_S = TIMEOUT_S + 10.0  # a request without a reply by then is hung (batches: ~0.1 s)
CLIENTS, REQUESTS = 64, 1200


@dataclass
class Sent:
    api: str
    users: np.ndarray
    items: np.ndarray
    path: str
    body: bytes
    headers: dict[str, str]


@pytest.fixture
def server(repository: Path, servers: Servers) -> tuple[ServerProcess, dict[str, np.ndarray]]:
    settings = {"queue_capacity_rows": QUEUE_ROWS, "request_timeout_s": TIMEOUT_S}
    return start_heavy(servers, repository, max_batch_rows=ROWS, **settings)


def _request(i: int) -> Sent:
    users, items = random_rows(ROWS, N_USERS, N_ITEMS, seed=i)
    if i % 4:
        body, headers = infer_body(users, items)
        return Sent("v2", users, items, "/v2/models/heavy/infer", body, headers)
    # Every fourth goes through the recommendation API, which shares the batcher.
    users, items, body = score_body(users, items)
    return Sent("v1", users, items, "/v1/models/heavy/score", body, {})


def _scores(sent: Sent, reply: RawResponse) -> np.ndarray:
    if sent.api == "v2":
        return binary_scores(reply.body, reply.headers)
    return np.asarray(reply.json()["scores"], dtype=np.float32)


@pytest.mark.slow
def test_overload_answers_every_request_once_with_200_or_503(
    server: tuple[ServerProcess, dict[str, np.ndarray]],
) -> None:
    process, params = server
    url = process.url
    stats_url = f"{url}/v2/models/heavy/stats"
    before = httpx.get(stats_url).json()["model_stats"][0]
    requests = [_request(i) for i in range(REQUESTS)]

    async def main() -> list[tuple[Sent, RawResponse | BaseException, float]]:
        todo = list(range(REQUESTS))
        results: list[tuple[Sent, RawResponse | BaseException, float]] = []

        async def client() -> None:
            connection = AsyncConnection(process.port)
            try:
                while todo:
                    sent = requests[todo.pop()]
                    started = time.monotonic()
                    try:
                        reply: RawResponse | BaseException = await asyncio.wait_for(
                            connection.request("POST", sent.path, sent.body, sent.headers),
                            REPLY_LIMIT_S,
                        )
                    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                        reply = exc
                        await connection.close()
                    results.append((sent, reply, time.monotonic() - started))
            finally:
                await connection.close()

        async def probe() -> None:
            connection = AsyncConnection(process.port)
            try:
                while todo:
                    for path in ("/v2/health/live", "/v2/health/ready"):
                        try:
                            reply = await asyncio.wait_for(connection.request("GET", path), 5)
                            health.append(reply.status)
                        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                            health.append(repr(exc))
                    await asyncio.sleep(0.01)
            finally:
                await connection.close()

        await asyncio.gather(probe(), *(client() for _ in range(CLIENTS)))
        return results

    health: list[int | str] = []
    results = asyncio.run(main())

    assert len(results) == REQUESTS
    failures = [reply for _, reply, _ in results if isinstance(reply, BaseException)]
    assert failures == [], f"{len(failures)} requests got no reply, e.g. {failures[0]!r}"
    replies = [(sent, reply) for sent, reply, _ in results if isinstance(reply, RawResponse)]
    assert {reply.status for _, reply in replies} <= {200, 503}
    ok = [(sent, reply) for sent, reply in replies if reply.status == 200]
    refused = [reply for _, reply in replies if reply.status == 503]
    assert ok and refused, f"{len(ok)} served, {len(refused)} refused: not an overload"
    for reply in refused:
        assert int(reply.headers["retry-after"]) >= 1
        assert reply.json()["error"]
    for sent, reply in ok:
        expected = reference_scores(params, sent.users, sent.items)
        np.testing.assert_allclose(_scores(sent, reply), expected, rtol=1e-4, atol=1e-5)
    assert health and set(health) == {200}, f"health checks answered {set(health)}"

    # Exactly the requests answered 200 were computed, each once; refused ones never were.
    after = httpx.get(stats_url).json()["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == len(ok) * ROWS
    success = after["inference_stats"]["success"]["count"]
    assert success - before["inference_stats"]["success"]["count"] == len(ok)
    assert metric_value(url, "recserve_queue_rows", {"model": "heavy"}) == 0
    slowest = max(seconds for _, _, seconds in results)
    print(
        f"\noverload: {REQUESTS} requests from {CLIENTS} connections -> {len(ok)} x 200, "
        f"{len(refused)} x 503; slowest reply {slowest:.2f} s; {len(health)} health checks"
    )

    # And it serves normally once the burst is over.
    sent = _request(REQUESTS + 1)  # a /v2 request
    response = httpx.post(url + sent.path, content=sent.body, headers=sent.headers)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        binary_scores(response.content, response.headers),
        reference_scores(params, sent.users, sent.items),
        rtol=1e-4,
        atol=1e-5,
    )
