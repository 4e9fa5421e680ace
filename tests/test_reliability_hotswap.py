"""Hot swap under load, end to end: versions published and removed while traffic runs.

Not one request fails, each reply comes from one whole version (its scores are that version's),
every unloaded version releases its ONNX Runtime session and resident memory returns to its level.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.factories import publish_random_version, reference_scores
from tests.raw_http import AsyncConnection, RawResponse
from tests.reliability_tools import (
    binary_reply,
    infer_body,
    random_rows,
    score_body,
    served_versions,
    wait_until,
)
from tests.server_process import ServerProcess, Servers, rss_bytes

MODEL = "swap"
# Big enough vocabularies and tables that a version leaked per swap would show in the RSS.
N_USERS, N_ITEMS, DIM = 2_000, 30_000, 32
ROWS = 64
CONNECTIONS = 4
CYCLES = 8  # each: publish, then remove the old version; publish, then remove the new one
WARMUP_CYCLES = 3  # the allocators' pools reach their size (the RSS then stays level)
RSS_TOLERANCE = 0.10
_SESSIONS = re.compile(r"unloaded model .swap. version \d+ \((\d+) ONNX Runtime session")


class Versions:
    """Parameters of every version published so far, by number (a removed number is reused)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.params: dict[int, list[dict[str, np.ndarray]]] = {}
        self.seed = 0

    def publish(self) -> int:
        self.seed += 1
        published, params = publish_random_version(
            self.root, MODEL, n_users=N_USERS, n_items=N_ITEMS, dim=DIM, seed=self.seed
        )
        self.params.setdefault(published.version, []).append(params)
        return published.version

    def remove(self, version: int) -> None:
        shutil.rmtree(self.root / MODEL / str(version))


@pytest.fixture
def setup(repository: Path, servers: Servers) -> tuple[ServerProcess, Versions]:
    versions = Versions(repository)
    versions.publish()
    return servers.start(repository, poll_interval_s=0.1, ort_intra_op_threads=1), versions


def _wait_served(server: ServerProcess, expected: list[int]) -> None:
    wait_until(lambda: served_versions(server.url, MODEL) == expected, 60, f"{expected} served")


def _swap_cycle(server: ServerProcess, versions: Versions) -> None:
    """Publish v+1 and remove v; then publish v+2 and remove it again (back to v+1)."""
    old = served_versions(server.url, MODEL)[0]
    new = versions.publish()
    _wait_served(server, [new])
    versions.remove(old)
    newest = versions.publish()
    _wait_served(server, [newest])
    versions.remove(newest)
    _wait_served(server, [new])


@pytest.mark.slow
def test_versions_swapped_under_load_fail_no_request_and_leak_nothing(
    setup: tuple[ServerProcess, Versions],
) -> None:
    server, versions = setup
    stop = threading.Event()
    outcomes: list[tuple[str, RawResponse | BaseException, np.ndarray, np.ndarray]] = []

    async def traffic() -> None:
        async def client(k: int) -> None:
            connection = AsyncConnection(server.port)
            i = 0
            try:
                while not stop.is_set():
                    i += 1
                    users, items = random_rows(ROWS, N_USERS, N_ITEMS, seed=1000 * k + i)
                    if k % 2:
                        api = "v2"
                        body, headers = infer_body(users, items)
                        path = f"/v2/models/{MODEL}/infer"
                    else:  # one user, known item ids
                        api = "v1"
                        users, items, body = score_body(users, items)
                        headers = {}
                        path = f"/v1/models/{MODEL}/score"
                    try:
                        reply: RawResponse | BaseException = await asyncio.wait_for(
                            connection.request("POST", path, body, headers), 30
                        )
                    except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                        reply = exc
                        await connection.close()
                    outcomes.append((api, reply, users, items))
            finally:
                await connection.close()

        await asyncio.gather(*(client(k) for k in range(CONNECTIONS)))

    runner = threading.Thread(target=asyncio.run, args=(traffic(),))
    runner.start()
    try:
        for _ in range(WARMUP_CYCLES):
            _swap_cycle(server, versions)
        rss_before = rss_bytes(server.process.pid)
        for _ in range(CYCLES):
            _swap_cycle(server, versions)
        rss_after = rss_bytes(server.process.pid)
    finally:
        stop.set()
        runner.join(60)

    failures = [(api, r) for api, r, _, _ in outcomes if not isinstance(r, RawResponse)]
    assert failures == [], failures[:3]
    replies = [(api, r) for api, r, _, _ in outcomes if isinstance(r, RawResponse)]
    bad = [(api, r.status, r.body[:200]) for api, r in replies if r.status != 200]
    assert bad == [], f"{len(bad)} of {len(outcomes)} failed, e.g. {bad[:3]}"
    seen = set()
    for api, reply, users, items in outcomes:
        assert isinstance(reply, RawResponse)
        if api == "v2":
            header, scores = binary_reply(reply.body, reply.headers)
        else:
            header = reply.json()
            scores = np.asarray(header["scores"], dtype=np.float32)
        version = int(header["model_version"])
        matches = [
            k
            for k, params in enumerate(versions.params[version])
            if np.allclose(scores, reference_scores(params, users, items), rtol=1e-4, atol=1e-5)
        ]
        assert matches, f"{api} reply of version {version} matches no publication of it"
        seen.add((version, matches[0]))
    assert len(seen) > CYCLES, f"traffic saw versions {sorted(seen)} only"

    open_sessions = [int(n) for n in _SESSIONS.findall(server.log())]
    assert len(open_sessions) >= 3 * (WARMUP_CYCLES + CYCLES)
    assert max(open_sessions) <= 2 and open_sessions[-1] == 1, open_sessions
    growth = rss_after / rss_before - 1
    print(
        f"\nhot swap: {len(outcomes)} requests over {CYCLES} cycles ({3 * CYCLES} swaps), "
        f"{len(seen)} versions served, 0 failed; RSS {rss_before / 2**20:.1f} -> "
        f"{rss_after / 2**20:.1f} MiB ({growth:+.1%})"
    )
    assert growth < RSS_TOLERANCE
