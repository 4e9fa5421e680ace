"""Two-stage recommend through the real server: retrieval by dot product over the version's
vectors, seen and excluded items left out, the survivors ranked by the model; equal to the
exhaustive ranking when ``retrieve_n`` covers the catalog, on the exact and on the IVF index;
the mode chosen by catalog size, said in the response, refused where it cannot serve; the index
rebuilt on hot swap while traffic runs, with no failed request."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelrepo import History, RetrievalVectors
from tests.factories import publish_mlp_version, random_params, reference_scores
from tests.raw_http import AsyncConnection, RawResponse
from tests.reliability_tools import served_versions, wait_until
from tests.server_process import Servers

N_USERS, N_ITEMS, DIM = 10, 400, 6
USER_IDS = [f"u{i}" for i in range(N_USERS)]
ITEM_IDS = [f"i{i}" for i in range(N_ITEMS)]
PARAMS = random_params(N_USERS + 1, N_ITEMS + 1, seed=21)
# Exact below 1,000 items; "ivf" gets the IVF index, probing every cell (exact answers).
CONFIGS: dict[str, dict[str, Any]] = {
    "small": {"two_stage_above_items": 1000},  # auto: exhaustive
    "exact": {"two_stage_above_items": 100, "max_retrieve_n": 500},  # auto: two-stage
    "ivf": {"two_stage_above_items": 100, "ann_above_items": 50, "ann_lists": 8, "ann_probes": 8},
}


def vectors(seed: int) -> RetrievalVectors:
    rng = np.random.default_rng(seed)
    return RetrievalVectors(
        rng.normal(size=(N_USERS + 1, DIM)).astype(np.float32),
        rng.normal(size=(N_ITEMS + 1, DIM)).astype(np.float32),
    )


VECTORS = vectors(22)


def history() -> History:
    """Each user has seen every 9th item from an offset of their own."""
    pairs = [(u, i) for u in range(1, N_USERS + 1) for i in range(1 + u % 9, N_ITEMS + 1, 9)]
    users, items = np.array(pairs).T
    return History.from_pairs(users, items, N_USERS + 1, N_ITEMS + 1)


HISTORY = history()


def publish(repository: Path, name: str, retrieval: RetrievalVectors | None) -> None:
    publish_mlp_version(
        repository, name, PARAMS, USER_IDS, ITEM_IDS, history=HISTORY, retrieval=retrieval
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, module_servers: Servers) -> Iterator[Any]:
    repository = tmp_path_factory.mktemp("repo")
    for name, config in CONFIGS.items():
        publish(repository, name, VECTORS)
        (repository / name / "config.json").write_text(json.dumps({"retrieval": config}))
    publish(repository, "plain", None)
    server = module_servers.start(repository, max_batch_rows=64)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def answer(client: httpx.Client, model: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"/v1/models/{model}/recommend", json=body)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


def expected_two_stage(user_row: int, retrieve_n: int, k: int, exclude: list[str]) -> list[str]:
    """Retrieval top ``retrieve_n`` by dot product among the items neither seen nor excluded,
    ranked by the model, best first (ties by id)."""
    left_out = set(HISTORY.items_of(user_row).tolist()) | {ITEM_IDS.index(i) + 1 for i in exclude}
    dots = VECTORS.item_vectors[1:] @ VECTORS.user_vectors[user_row]
    order = [row + 1 for row in np.argsort(-dots, kind="stable").tolist()]
    retrieved = np.array([row for row in order if row not in left_out][:retrieve_n])
    scores = reference_scores(PARAMS, np.full(retrieved.size, user_row), retrieved)
    ranked = sorted(range(retrieved.size), key=lambda j: (-scores[j], ITEM_IDS[retrieved[j] - 1]))
    return [ITEM_IDS[retrieved[j] - 1] for j in ranked[:k]]


@pytest.mark.parametrize("model", ["exact", "ivf"])
@pytest.mark.parametrize("user", ["u0", "u7", "nobody"])
def test_two_stage_equals_exhaustive_when_retrieve_n_covers_the_catalog(
    client: httpx.Client, model: str, user: str
) -> None:
    body = {"user_id": user, "k": 25, "exclude": ["i3", "i10"]}
    whole = answer(client, model, mode="exhaustive", **body)
    both = answer(client, model, mode="two_stage", retrieve_n=N_ITEMS, **body)
    assert (whole["mode"], both["mode"]) == ("exhaustive", "two_stage")
    assert both["items"] == whole["items"]
    assert len(both["items"]) == 25


@pytest.mark.parametrize("model", ["exact", "ivf"])
@pytest.mark.parametrize("user_row", [1, 4, 9])
def test_two_stage_ranks_the_retrieved_items_left_after_exclusion(
    client: httpx.Client, model: str, user_row: int
) -> None:
    exclude = ["i1", "i2", "i50"]
    got = answer(client, model, user_id=USER_IDS[user_row - 1], k=8, retrieve_n=30, exclude=exclude)
    assert got["mode"] == "two_stage"
    items = [item["item_id"] for item in got["items"]]
    assert items == expected_two_stage(user_row, 30, 8, exclude)
    assert not set(items) & {ITEM_IDS[r - 1] for r in HISTORY.items_of(user_row).tolist()}


def test_at_least_k_items_are_retrieved(client: httpx.Client) -> None:
    got = answer(client, "exact", user_id="u2", k=40, retrieve_n=5)
    assert [item["item_id"] for item in got["items"]] == expected_two_stage(3, 40, 40, [])


@pytest.mark.parametrize(
    ("model", "body", "mode"),
    [
        ("small", {}, "exhaustive"),  # 400 items, two-stage above 1,000
        ("exact", {}, "two_stage"),  # two-stage above 100
        ("ivf", {}, "two_stage"),
        ("plain", {}, "exhaustive"),  # no retrieval vectors
        ("small", {"mode": "two_stage"}, "two_stage"),
        ("exact", {"mode": "exhaustive"}, "exhaustive"),
        ("exact", {"candidates": ["i5", "i6"], "mode": "two_stage"}, "candidates"),
        ("plain", {"candidates": ["i5", "i6"]}, "candidates"),
    ],
)
def test_the_response_says_which_mode_served_it(
    client: httpx.Client, model: str, body: dict[str, Any], mode: str
) -> None:
    assert answer(client, model, user_id="u1", k=2, **body)["mode"] == mode


@pytest.mark.parametrize(
    ("model", "body", "named"),
    [
        ("plain", {"mode": "two_stage"}, "'mode' two_stage needs retrieval vectors"),
        ("small", {"retrieve_n": 2001}, "'retrieve_n' 2001 is above the bound"),
        ("exact", {"retrieve_n": 501, "mode": "exhaustive"}, "'retrieve_n' 501 is above"),
        ("exact", {"retrieve_n": 0}, "retrieve_n"),
        ("exact", {"retrieve_n": "9"}, "retrieve_n"),
        ("exact", {"mode": "fast"}, "mode"),
    ],
)
def test_a_bad_mode_or_retrieve_n_is_refused_naming_it(
    client: httpx.Client, model: str, body: dict[str, Any], named: str
) -> None:
    response = client.post(f"/v1/models/{model}/recommend", json={"user_id": "u1", **body})
    assert response.status_code == 400
    assert named in response.text


def test_the_index_build_is_exported(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("recserve_retrieval_index_")
    }
    ivf = samples['recserve_retrieval_index_bytes{model="ivf",version="1"}']
    assert ivf >= N_ITEMS * DIM * 4
    assert samples['recserve_retrieval_index_bytes{model="exact",version="1"}'] == 0
    assert samples['recserve_retrieval_index_build_seconds{model="ivf",version="1"}'] > 0
    assert not any('model="plain"' in name for name in samples)


SWAP_MODEL, SWAPS, CONNECTIONS = "swap", 3, 3


def serves(url: str, version: int) -> bool:
    return served_versions(url, SWAP_MODEL) == [version]


@pytest.mark.slow
def test_the_index_is_rebuilt_on_hot_swap_with_no_failed_request(
    repository: Path, servers: Servers
) -> None:
    def publish_seeded(seed: int) -> int:
        params = random_params(N_USERS + 1, N_ITEMS + 1, seed=seed)
        published = publish_mlp_version(
            repository, SWAP_MODEL, params, USER_IDS, ITEM_IDS, retrieval=vectors(seed)
        )
        return published.version

    publish_seeded(100)
    (repository / SWAP_MODEL / "config.json").write_text(json.dumps({"retrieval": CONFIGS["ivf"]}))
    server = servers.start(repository, poll_interval_s=0.1, ort_intra_op_threads=1)
    stop = threading.Event()
    replies: list[RawResponse | BaseException] = []
    body = json.dumps({"user_id": "u3", "k": 5, "mode": "two_stage", "retrieve_n": 20}).encode()

    async def client(_: int) -> None:
        connection = AsyncConnection(server.port)
        try:
            while not stop.is_set() and len(replies) < 20_000:
                try:
                    replies.append(
                        await asyncio.wait_for(
                            connection.request("POST", f"/v1/models/{SWAP_MODEL}/recommend", body),
                            30,
                        )
                    )
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    replies.append(exc)
                    await connection.close()
        finally:
            await connection.close()

    async def traffic() -> None:
        await asyncio.gather(*(client(k) for k in range(CONNECTIONS)))

    runner = threading.Thread(target=asyncio.run, args=(traffic(),))
    runner.start()
    try:
        for swap in range(SWAPS):
            old = served_versions(server.url, SWAP_MODEL)
            new = publish_seeded(101 + swap)
            wait_until(functools.partial(serves, server.url, new), 60, f"{new} served")
            shutil.rmtree(repository / SWAP_MODEL / str(old[0]))
    finally:
        stop.set()
        runner.join(60)
    failed = [r for r in replies if not isinstance(r, RawResponse) or r.status != 200]
    assert failed == [], failed[:3]
    versions = {r.json()["model_version"] for r in replies if isinstance(r, RawResponse)}
    assert len(versions) >= 2, versions  # traffic ran across the swaps
    assert all(r.json()["mode"] == "two_stage" for r in replies if isinstance(r, RawResponse))
    assert server.log().count("ivf retrieval index over 400 items") == SWAPS + 1
