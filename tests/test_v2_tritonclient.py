"""Acceptance: the real ``tritonclient.http`` client against the real server in a subprocess.

Plus raw-HTTP checks the client cannot make: compressed bodies, the body limit, path tricks.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import tritonclient.http.aio as triton_aio
from tritonclient.utils import InferenceServerException

from tests.factories import publish_random_version, reference_scores
from tests.server_process import ServerProcess, start_server

TOKEN = "s3cret-token"
MAX_BODY = 256 * 1024
N_USERS, N_ITEMS = 50, 40


class Repo:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "recs").mkdir(parents=True)
        (root / "recs" / "config.json").write_text(json.dumps({"version_policy": {"all": {}}}))
        self.v1 = publish_random_version(root, "recs", n_users=N_USERS, n_items=N_ITEMS, seed=1)[1]
        self.v2 = publish_random_version(root, "recs", n_users=N_USERS, n_items=N_ITEMS, seed=2)[1]
        self.other = publish_random_version(root, "other", seed=3)[1]
        self.batchy = publish_random_version(root, "batchy", seed=4)[1]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Repo:
    return Repo(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="module")
def server(repo: Repo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    running = start_server(
        repo.root,
        log,
        "--poll-interval-s",
        "0",
        "--max-request-bytes",
        str(MAX_BODY),
        env={"RECSERVE_ADMIN_TOKEN": TOKEN},
    )
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture
def client(server: ServerProcess) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(server.host_port) as c:
        yield c


def _rows(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, N_USERS + 1, n).astype(np.int64)
    items = rng.integers(0, N_ITEMS + 1, n).astype(np.int64)
    return users, items


def _inputs(users: np.ndarray, items: np.ndarray, binary: bool = True) -> list[triton.InferInput]:
    inputs = []
    for name, rows in (("user", users), ("item", items)):
        tensor = triton.InferInput(name, list(rows.shape), "INT64")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        inputs.append(tensor)
    return inputs


def _admin(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_server_is_live_and_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()


def test_server_metadata(client: triton.InferenceServerClient) -> None:
    meta = client.get_server_metadata()
    assert meta["name"] == "recserve"
    assert meta["version"]
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


def test_model_readiness_with_and_without_version(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("recs")
    assert client.is_model_ready("recs", "1")
    assert client.is_model_ready("recs", "2")
    assert not client.is_model_ready("recs", "3")
    assert not client.is_model_ready("nosuchmodel")


def test_model_metadata(client: triton.InferenceServerClient) -> None:
    meta = client.get_model_metadata("recs")
    assert meta["name"] == "recs"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [
        {"name": "user", "datatype": "INT64", "shape": [-1]},
        {"name": "item", "datatype": "INT64", "shape": [-1]},
    ]
    assert meta["outputs"] == [{"name": "score", "datatype": "FP32", "shape": [-1]}]
    assert client.get_model_metadata("recs", "1")["name"] == "recs"


def test_model_config(client: triton.InferenceServerClient) -> None:
    config = client.get_model_config("recs", "2")
    assert config["name"] == "recs"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["version_policy"] == {"all": {}}
    assert config["max_batch_size"] > 0
    assert [t["name"] for t in config["input"]] == ["user", "item"]
    assert config["input"][0]["data_type"] == "TYPE_INT64"
    assert config["output"] == [{"name": "score", "data_type": "TYPE_FP32", "dims": []}]
    assert "max_queue_delay_microseconds" in config["dynamic_batching"]


def test_infer_json_inputs_and_outputs(repo: Repo, client: triton.InferenceServerClient) -> None:
    users, items = _rows(25, seed=1)
    outputs = [triton.InferRequestedOutput("score", binary_data=False)]
    result = client.infer(
        "recs", _inputs(users, items, binary=False), outputs=outputs, request_id="json-1"
    )
    response = result.get_response()
    assert response["id"] == "json-1"
    assert response["model_name"] == "recs"
    assert response["model_version"] == "2"  # the latest version
    assert "data" in response["outputs"][0]
    expected = reference_scores(repo.v2, users, items)
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-5, atol=1e-6)


def test_infer_binary_inputs_and_outputs(repo: Repo, client: triton.InferenceServerClient) -> None:
    users, items = _rows(300, seed=2)
    result = client.infer("recs", _inputs(users, items))
    response = result.get_response()
    assert response["outputs"][0]["parameters"]["binary_data_size"] == 4 * 300
    expected = reference_scores(repo.v2, users, items)
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-5, atol=1e-6)


def test_infer_a_specific_version(repo: Repo, client: triton.InferenceServerClient) -> None:
    users, items = _rows(40, seed=3)
    outputs = [triton.InferRequestedOutput("score", binary_data=True)]
    result = client.infer("recs", _inputs(users, items), model_version="1", outputs=outputs)
    assert result.get_response()["model_version"] == "1"
    expected = reference_scores(repo.v1, users, items)
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_infer_with_compressed_requests(
    repo: Repo, client: triton.InferenceServerClient, algorithm: str
) -> None:
    users, items = _rows(64, seed=4)
    result = client.infer("recs", _inputs(users, items), request_compression_algorithm=algorithm)
    expected = reference_scores(repo.v2, users, items)
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-5, atol=1e-6)


def test_unknown_model_is_404(client: triton.InferenceServerClient) -> None:
    users, items = _rows(3)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("nosuchmodel", _inputs(users, items))
    assert caught.value.status() == "404"
    assert "nosuchmodel" in caught.value.message()
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nosuchmodel")
    assert caught.value.status() == "404"


def test_unknown_version_is_404(client: triton.InferenceServerClient) -> None:
    users, items = _rows(3)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("recs", _inputs(users, items), model_version="9")
    assert caught.value.status() == "404"


def test_out_of_range_row_is_400_and_names_the_input(client: triton.InferenceServerClient) -> None:
    users, items = _rows(5)
    items[3] = N_ITEMS + 7
    with pytest.raises(InferenceServerException) as caught:
        client.infer("recs", _inputs(users, items))
    assert caught.value.status() == "400"
    assert "item" in caught.value.message()


def test_wrong_datatype_is_400(client: triton.InferenceServerClient) -> None:
    user = triton.InferInput("user", [2], "FP32")
    user.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
    item = triton.InferInput("item", [2], "INT64")
    item.set_data_from_numpy(np.array([1, 2], dtype=np.int64))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("recs", [user, item])
    assert caught.value.status() == "400"
    assert "user" in caught.value.message()


def test_missing_input_is_400(client: triton.InferenceServerClient) -> None:
    users, items = _rows(2)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("recs", _inputs(users, items)[:1])
    assert caught.value.status() == "400"
    assert "item" in caught.value.message()


def test_unknown_output_is_400(client: triton.InferenceServerClient) -> None:
    users, items = _rows(2)
    outputs = [triton.InferRequestedOutput("embedding")]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("recs", _inputs(users, items), outputs=outputs)
    assert caught.value.status() == "400"
    assert "embedding" in caught.value.message()


def test_statistics_count_rows(client: triton.InferenceServerClient) -> None:
    before = client.get_inference_statistics("recs", "1")["model_stats"][0]
    users, items = _rows(17)
    client.infer("recs", _inputs(users, items), model_version="1")
    stats = client.get_inference_statistics("recs", "1")["model_stats"]
    assert [(s["name"], s["version"]) for s in stats] == [("recs", "1")]
    assert stats[0]["inference_count"] == before["inference_count"] + 17
    assert stats[0]["execution_count"] > before["execution_count"]
    every = client.get_inference_statistics("recs")["model_stats"]
    assert [s["version"] for s in every] == ["1", "2"]
    everything = client.get_inference_statistics()["model_stats"]
    assert {s["name"] for s in everything} >= {"recs", "batchy"}


def test_repository_api_needs_the_admin_token(client: triton.InferenceServerClient) -> None:
    for headers in (None, _admin("wrong-token"), {"Authorization": TOKEN}):
        expected = "401" if headers is None else "403"  # no credentials, or not the token
        if headers is not None:  # the read-only index needs none, but refuses wrong ones
            with pytest.raises(InferenceServerException) as caught:
                client.get_model_repository_index(headers=headers)
            assert caught.value.status() == expected
        with pytest.raises(InferenceServerException) as caught:
            client.unload_model("other", headers=headers)
        assert caught.value.status() == expected
        with pytest.raises(InferenceServerException) as caught:
            client.load_model("other", headers=headers)
        assert caught.value.status() == expected
    assert client.is_model_ready("other")


def test_repository_index_unload_and_load(
    repo: Repo, server: ServerProcess, client: triton.InferenceServerClient
) -> None:
    index = client.get_model_repository_index(headers=_admin())
    states = {(e["name"], e["version"]): e["state"] for e in index}
    assert states[("recs", "1")] == "READY"
    assert states[("recs", "2")] == "READY"
    assert states[("other", "1")] == "READY"

    client.unload_model("other", headers=_admin())
    assert not client.is_model_ready("other")
    index = client.get_model_repository_index(headers=_admin())
    assert {(e["name"], e["state"]) for e in index if e["name"] == "other"} == {
        ("other", "UNAVAILABLE")
    }
    # Read without the token: the same index, the server's own reasons shown as they are.
    assert client.get_model_repository_index() == index
    assert httpx.get(f"{server.url}/v2/models", timeout=10).json() == index
    assert [e["reason"] for e in index if e["name"] == "other"] == ["unloaded"]

    client.load_model("other", headers=_admin())
    assert client.is_model_ready("other")
    users, items = _rows(5)
    users, items = users % 51, items % 41
    result = client.infer("other", _inputs(users, items))
    expected = reference_scores(repo.other, users, items)
    np.testing.assert_allclose(result.as_numpy("score"), expected, rtol=1e-5, atol=1e-6)


def test_loading_a_model_not_in_the_repository_is_404(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("absent", headers=_admin())
    assert caught.value.status() == "404"


def test_load_with_config_override_is_refused(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("other", headers=_admin(), config='{"max_batch_size": 1}')
    assert caught.value.status() == "400"


def test_concurrent_requests_share_onnx_runtime_runs(repo: Repo, server: ServerProcess) -> None:
    """32 requests in flight at once are served by far fewer ONNX Runtime runs.

    tritonclient.http's ``async_infer`` sleeps 10 ms after each send, so the asyncio client
    (tritonclient.http.aio) is what puts 32 requests in flight together.
    """
    rounds, concurrency, rows = 8, 32, 16
    batches = [[_rows(rows, seed=100 * r + i) for i in range(concurrency)] for r in range(rounds)]

    async def send_rounds() -> tuple[dict[str, Any], dict[str, Any], list[list[np.ndarray]]]:
        async with triton_aio.InferenceServerClient(server.host_port) as client:
            before = (await client.get_inference_statistics("batchy"))["model_stats"][0]
            scores = []
            for batch in batches:
                results = await asyncio.gather(
                    *(client.infer("batchy", _inputs(u % 51, i % 41)) for u, i in batch)
                )
                scores.append([result.as_numpy("score") for result in results])
            after = (await client.get_inference_statistics("batchy"))["model_stats"][0]
        return before, after, scores

    before, after, scores = asyncio.run(send_rounds())
    for batch, got in zip(batches, scores, strict=True):
        for (u, i), score in zip(batch, got, strict=True):
            expected = reference_scores(repo.batchy, u % 51, i % 41)
            np.testing.assert_allclose(score, expected, rtol=1e-5, atol=1e-6)
    requests = rounds * concurrency
    executions = after["execution_count"] - before["execution_count"]
    inferences = after["inference_count"] - before["inference_count"]
    assert inferences == requests * rows
    print(
        f"\nbatching: {requests} requests of {rows} rows, {concurrency} at a time -> "
        f"{executions} ONNX Runtime runs, {inferences / executions:.1f} rows "
        f"({requests / executions:.1f} requests) per run"
    )
    assert executions <= requests // 2


# -- raw HTTP ------------------------------------------------------------------------------------


def _infer_body(rows: int) -> bytes:
    users, items = _rows(rows)
    return json.dumps(
        {
            "inputs": [
                {"name": "user", "shape": [rows], "datatype": "INT64", "data": users.tolist()},
                {"name": "item", "shape": [rows], "datatype": "INT64", "data": items.tolist()},
            ]
        }
    ).encode()


def test_gzip_json_body_over_raw_http(repo: Repo, server: ServerProcess) -> None:
    users, items = _rows(10)
    body = _infer_body(10)
    response = httpx.post(
        f"{server.url}/v2/models/recs/versions/1/infer",
        content=gzip.compress(body),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    scores = response.json()["outputs"][0]["data"]
    np.testing.assert_allclose(scores, reference_scores(repo.v1, users, items), rtol=1e-5)


def test_corrupt_gzip_is_400(server: ServerProcess) -> None:
    response = httpx.post(
        f"{server.url}/v2/models/recs/infer",
        content=b"\x1f\x8b\x08garbage",
        headers={"Content-Encoding": "gzip"},
    )
    assert response.status_code == 400
    assert "gzip" in response.json()["error"]


def test_bad_json_is_400(server: ServerProcess) -> None:
    response = httpx.post(f"{server.url}/v2/models/recs/infer", content=b'{"inputs": [')
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]


def test_body_over_the_limit_is_413(server: ServerProcess) -> None:
    body = _infer_body(MAX_BODY // 4)
    assert len(body) > MAX_BODY
    response = httpx.post(f"{server.url}/v2/models/recs/infer", content=body)
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_streamed_body_over_the_limit_is_413(server: ServerProcess) -> None:
    def chunks() -> Iterator[bytes]:  # chunked transfer: no Content-Length to check up front
        for _ in range(2 * MAX_BODY // 4096):
            yield b" " * 4096

    response = httpx.post(f"{server.url}/v2/models/recs/infer", content=chunks())
    assert response.status_code == 413


def test_gzip_that_inflates_over_the_limit_is_413(server: ServerProcess) -> None:
    bomb = gzip.compress(b" " * (4 * MAX_BODY))
    assert len(bomb) < MAX_BODY
    response = httpx.post(
        f"{server.url}/v2/models/recs/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/models/../../etc/passwd", 404),
        ("/v2/models/..%2F..%2Fetc/ready", 404),
        ("/v2/models/%2e%2e/ready", 400),
        ("/v2/models/../ready", 400),
        ("/v2/models/rec%00s/ready", 400),
        ("/v2/models/Recs/ready", 400),
        ("/v2/models/recs/versions/0/ready", 400),
        ("/v2/models/recs/versions/-1/ready", 400),
        ("/v2/models/recs/versions/1.5/ready", 400),
        ("/v2/models/recs/versions/%2e%2e/ready", 400),
        ("/v2/models/recs/versions/99999999999999999999999/ready", 400),
    ],
)
def test_path_tricks_are_refused(server: ServerProcess, path: str, status: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request("GET", path)  # sent as written: no client-side normalisation
        response = connection.getresponse()
        body = json.loads(response.read())
    finally:
        connection.close()
    assert response.status == status
    assert "error" in body


def test_errors_have_json_bodies(server: ServerProcess) -> None:
    response = httpx.get(f"{server.url}/v2/no/such/endpoint")
    assert response.status_code == 404
    assert set(response.json()) == {"error"}
    response = httpx.delete(f"{server.url}/v2/health/live")
    assert response.status_code == 405
    assert set(response.json()) == {"error"}


def test_metrics_count_requests_by_endpoint(server: ServerProcess) -> None:
    httpx.get(f"{server.url}/v2/models/recs/ready")
    text = httpx.get(f"{server.url}/metrics").text
    assert (
        'recserve_requests_total{code="200",endpoint="model_ready",model="recs",version="2"}'
        in (text)
    )
    assert "recserve_request_duration_seconds_bucket" in text
