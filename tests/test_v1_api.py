"""The recommendation API against the real server: results equal ONNX Runtime plus a full sort."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.factories import publish_random_version
from tests.server_process import ServerProcess, start_server

N_USERS, N_ITEMS = 30, 60


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    publish_random_version(root, "rec", n_users=N_USERS, n_items=N_ITEMS, seed=3)
    return root


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    # A small max_batch_rows makes a whole-catalog request go through the batcher's split.
    running = start_server(repository, log, "--max-batch-rows", "16", "--poll-interval-s", "0.2")
    try:
        yield running
    finally:
        assert running.stop() == 0


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def ids(path: Path) -> list[str]:
    return path.read_text().splitlines()


def brute_force(version_dir: Path, user_id: str, candidates: list[str]) -> list[tuple[str, float]]:
    """Score with onnxruntime directly, then sort everything: (-score, item id)."""
    users, items = ids(version_dir / "users.txt"), ids(version_dir / "items.txt")
    user_row = users.index(user_id) + 1 if user_id in users else 0
    item_rows = np.array([items.index(i) + 1 if i in items else 0 for i in candidates])
    session = ort.InferenceSession(
        str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    feeds = {"user": np.full(len(item_rows), user_row, dtype=np.int64), "item": item_rows}
    (scores,) = session.run(["score"], feeds)
    pairs = [(item, float(s)) for item, s in zip(candidates, scores, strict=True)]
    return sorted(pairs, key=lambda pair: (-pair[1], pair[0]))


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize("user_id", ["u0", "u7", "u29", "never-seen"])
def test_whole_catalog_recommend_equals_brute_force(
    client: httpx.Client, repository: Path, user_id: str
) -> None:
    version_dir = repository / "rec" / "1"
    expected = brute_force(version_dir, user_id, ids(version_dir / "items.txt"))[:7]
    got = post(client, "/v1/models/rec/recommend", {"user_id": user_id, "k": 7})
    assert got["model_name"] == "rec" and got["model_version"] == "1"
    assert [i["item_id"] for i in got["items"]] == [item for item, _ in expected]
    assert np.allclose([i["score"] for i in got["items"]], [s for _, s in expected], atol=1e-6)
    assert got["unknown"] == {"user_id": user_id == "never-seen", "item_ids": []}


def test_exclusions_and_candidates_are_respected(client: httpx.Client, repository: Path) -> None:
    version_dir = repository / "rec" / "1"
    candidates = ["i3", "i9", "i17", "nope", "i40", "i41"]
    exclude = ["i9", "i40", "also-unknown"]
    body = {"user_id": "u5", "k": 10, "candidates": candidates, "exclude": exclude}
    got = post(client, "/v1/models/rec/versions/1/recommend", body)
    kept = [c for c in candidates if c not in exclude]
    expected = brute_force(version_dir, "u5", kept)
    assert [i["item_id"] for i in got["items"]] == [item for item, _ in expected]
    assert got["unknown"]["item_ids"] == ["nope"]  # an unknown candidate is still scored

    catalog = post(client, "/v1/models/rec/recommend", {"user_id": "u5", "k": 5})
    best = [i["item_id"] for i in catalog["items"]]
    excluded = post(
        client, "/v1/models/rec/recommend", {"user_id": "u5", "k": 5, "exclude": best[:2]}
    )
    assert [i["item_id"] for i in excluded["items"]][:3] == best[2:]
    assert not set(best[:2]) & {i["item_id"] for i in excluded["items"]}


def test_score_equals_v2_infer_on_the_same_rows(client: httpx.Client) -> None:
    item_ids = ["i0", "i12", "missing", "i59", 7]  # an integer id reads as its decimal string
    got = post(client, "/v1/models/rec/score", {"user_id": 4, "item_ids": item_ids})
    assert got["user_id"] == "4" and got["unknown"] == {
        "user_id": True,
        "item_ids": ["missing", "7"],
    }
    rows = [1, 13, 0, 60, 0]
    infer = post(
        client,
        "/v2/models/rec/infer",
        {
            "inputs": [
                {"name": "user", "datatype": "INT64", "shape": [5], "data": [0] * 5},
                {"name": "item", "datatype": "INT64", "shape": [5], "data": rows},
            ]
        },
    )
    assert got["scores"] == pytest.approx(infer["outputs"][0]["data"], abs=1e-7)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u1", "k": 1001}, "k"),
        ({"user_id": "u1", "k": 0}, "k"),
        ({"user_id": "x" * 257}, "user_id"),
        ({"user_id": "u1", "candidates": ["i1"] * 10_001}, "candidates"),
        ({"k": 3}, "user_id"),
        ({"user_id": ["u1"]}, "user_id"),
        ({"user_id": "u1", "surprise": 1}, "surprise"),
    ],
)
def test_limits_are_400_naming_the_field(
    client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    response = client.post("/v1/models/rec/recommend", json=body)
    assert response.status_code == 400
    assert field in response.json()["error"]


def test_malformed_bodies_and_unknown_models(client: httpx.Client) -> None:
    bad_json = client.post("/v1/models/rec/score", content=b"{not json")
    assert bad_json.status_code == 400 and "invalid request" in bad_json.json()["error"]
    deep = client.post("/v1/models/rec/score", content=b"[" * 100_000)
    assert deep.status_code == 400
    missing = client.post("/v1/models/nope/score", json={"user_id": "u", "item_ids": ["i"]})
    assert missing.status_code == 404


def test_openapi_documents_both_endpoints_with_examples(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    for name in ("recommend", "score"):
        operation = schema["paths"][f"/v1/models/{{model}}/{name}"]["post"]
        body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body_schema["examples"]


def test_a_new_version_with_another_vocabulary_serves_its_own_ids(
    client: httpx.Client, repository: Path
) -> None:
    publish_random_version(repository, "rec", n_users=N_USERS, n_items=25, seed=9, id_prefix="v2-")
    deadline = 100
    for _ in range(deadline):
        got = post(client, "/v1/models/rec/recommend", {"user_id": "v2-u1", "k": 30})
        if got["model_version"] == "2":
            break
        import time

        time.sleep(0.1)
    assert got["model_version"] == "2"
    version_dir = repository / "rec" / "2"
    expected = brute_force(version_dir, "v2-u1", ids(version_dir / "items.txt"))
    assert [i["item_id"] for i in got["items"]] == [item for item, _ in expected]
    assert all(i["item_id"].startswith("v2-") for i in got["items"])
    assert len(got["items"]) == 25
    # Version 1's ids are unknown to version 2, whose vocabulary came with it.
    old = post(client, "/v1/models/rec/score", {"user_id": "u1", "item_ids": ["i3"]})
    assert old["model_version"] == "2" and old["unknown"] == {"user_id": True, "item_ids": ["i3"]}
