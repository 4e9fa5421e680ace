"""The app in-process over a stand-in manager: routing, error mapping, auth, limits, metrics."""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

import service.app
from service.app import app_from_env, create_app
from service.errors import (
    InferenceFailed,
    InvalidInput,
    ModelNotFound,
    ModelNotReady,
    Overloaded,
    QueueTimeout,
    ServingError,
)
from service.http.state import STATE_KEY, AppState
from service.metrics.families import Metrics
from service.metrics.stats import VersionStats
from service.models.config import ModelConfig, resolve
from service.models.manager import IndexEntry, TensorSpec
from service.settings import Settings

TOKEN = "let-me-in"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeVersion:
    """A served version whose score is ``user * 10 + item``; ``fail_with`` makes infer raise."""

    def __init__(self, settings: Settings, name: str = "m", version: int = 1) -> None:
        self.name = name
        self.version = version
        self.inputs = (TensorSpec("user", "INT64", (-1,)), TensorSpec("item", "INT64", (-1,)))
        self.outputs = (TensorSpec("score", "FP32", (-1,)), TensorSpec("twice", "INT64", (-1,)))
        self.config = resolve(ModelConfig(), settings)
        self.stats = VersionStats(name, str(version))
        self.provider = "CPUExecutionProvider"
        self.fail_with: Exception | None = None
        self.seen: list[dict[str, np.ndarray]] = []

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fail_with is not None:
            raise self.fail_with
        self.seen.append(dict(inputs))
        user, item = inputs["user"], inputs["item"]
        return {"score": (user * 10 + item).astype(np.float32), "twice": user * 2}


class FakeManager:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.versions = {1: FakeVersion(settings, version=1), 2: FakeVersion(settings, version=2)}
        self.ready = False
        self.started = self.stopped = False
        self.loaded: list[str] = []
        self.unloaded: list[str] = []
        self.lookups: list[tuple[str, int | None]] = []

    async def start(self) -> None:
        self.started = self.ready = True

    async def shutdown(self) -> None:
        self.stopped, self.ready = True, False

    def get(self, name: str, version: int | None = None) -> FakeVersion:
        self.lookups.append((name, version))
        if name != "m":
            raise ModelNotFound(f"unknown model '{name}'")
        if version is None:
            return self.versions[max(self.versions)]
        if version not in self.versions:
            raise ModelNotFound(f"model 'm' has no version {version}")
        return self.versions[version]

    def model_versions(self, name: str) -> list[int]:
        return sorted(self.versions)

    def index(self) -> list[IndexEntry]:
        return [
            IndexEntry("m", "1", "READY", ""),
            IndexEntry("m", "2", "READY", ""),
            IndexEntry("broken", "1", "UNAVAILABLE", "bad model.onnx"),
        ]

    async def load(self, name: str) -> None:
        if name != "m":
            raise ModelNotFound(f"model '{name}' is not in the repository")
        self.loaded.append(name)

    async def unload(self, name: str) -> None:
        self.unloaded.append(name)


class Harness:
    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def state(self) -> AppState:
        state: AppState = getattr(self.app.state, STATE_KEY)
        return state

    @property
    def manager(self) -> FakeManager:
        manager = self.state.manager
        assert isinstance(manager, FakeManager)
        return manager

    def counter(self, endpoint: str, code: int, model: str = "", version: str = "") -> float:
        value = self.state.metrics.registry.get_sample_value(
            "recserve_requests_total",
            {"model": model, "version": version, "endpoint": endpoint, "code": str(code)},
        )
        return value or 0.0


def _settings(**overrides: Any) -> Settings:
    return Settings(poll_interval_s=0, max_request_bytes=4096, **overrides)


async def _harness(settings: Settings) -> AsyncIterator[Harness]:
    app = create_app(settings, manager_factory=FakeManager)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield Harness(app, client)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    async for harness in _harness(_settings(admin_token=SecretStr(TOKEN))):
        yield harness


@pytest.fixture
async def no_token() -> AsyncIterator[Harness]:
    async for harness in _harness(_settings()):
        yield harness


def _infer_doc(users: list[int], items: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "user", "shape": [len(users)], "datatype": "INT64", "data": users},
            {"name": "item", "shape": [len(items)], "datatype": "INT64", "data": items},
        ],
        **extra,
    }


# -- health and metadata -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_starts_and_stops_the_manager() -> None:
    app = create_app(_settings(), manager_factory=FakeManager)
    state: AppState = getattr(app.state, STATE_KEY)
    assert state.manager is None
    async with app.router.lifespan_context(app):
        manager = state.manager
        assert isinstance(manager, FakeManager)
        assert manager.started and not manager.stopped
    assert manager.stopped
    assert state.lifecycle.draining


@pytest.mark.anyio
async def test_health_and_server_metadata(h: Harness) -> None:
    assert (await h.client.get("/v2/health/live")).status_code == 200
    assert (await h.client.get("/v2/health/ready")).status_code == 200
    meta = (await h.client.get("/v2")).json()
    assert meta["name"] == "recserve"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


@pytest.mark.anyio
async def test_ready_is_503_while_the_manager_is_not_ready(h: Harness) -> None:
    h.manager.ready = False
    response = await h.client.get("/v2/health/ready")
    assert response.status_code == 503
    assert "error" in response.json()


@pytest.mark.anyio
async def test_draining_turns_readiness_false_and_refuses_inference(h: Harness) -> None:
    h.state.lifecycle.begin_drain()
    assert (await h.client.get("/v2/health/ready")).status_code == 503
    assert (await h.client.get("/v2/health/live")).status_code == 200
    response = await h.client.post("/v2/models/m/infer", json=_infer_doc([1], [2]))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "shutting down" in response.json()["error"]
    assert response.headers["connection"] == "close"
    assert h.manager.versions[2].seen == []


@pytest.mark.anyio
async def test_model_metadata_ready_config_and_stats_by_version(h: Harness) -> None:
    meta = (await h.client.get("/v2/models/m")).json()
    assert meta["versions"] == ["1", "2"]
    assert meta["outputs"][1] == {"name": "twice", "datatype": "INT64", "shape": [-1]}
    assert (await h.client.get("/v2/models/m/versions/1/ready")).status_code == 200
    assert h.manager.lookups[-1] == ("m", 1)
    config = (await h.client.get("/v2/models/m/versions/2/config")).json()
    assert config["max_batch_size"] == h.state.settings.batching.max_batch_rows
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == (
        h.state.settings.batching.max_queue_delay_us
    )
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    h.manager.versions[1].stats.inference_count = 7
    stats = (await h.client.get("/v2/models/m/stats")).json()["model_stats"]
    assert [(s["version"], s["inference_count"]) for s in stats] == [("1", 7), ("2", 0)]
    one = (await h.client.get("/v2/models/m/versions/1/stats")).json()["model_stats"]
    assert [s["version"] for s in one] == ["1"]
    every = (await h.client.get("/v2/models/stats")).json()["model_stats"]
    assert [s["version"] for s in every] == ["1", "2"]


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["0", "01", "-2", "1.0", "x", "1e3", "9" * 30])
async def test_versions_that_are_not_positive_integers_are_400(h: Harness, version: str) -> None:
    response = await h.client.get(f"/v2/models/m/versions/{version}/ready")
    assert response.status_code == 400
    assert "version" in response.json()["error"]
    assert h.manager.lookups == []


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["M", "-m", ".hidden", "a" * 65, "m%00", "%2e%2e", "m%20x"])
async def test_bad_model_names_never_reach_the_manager(h: Harness, name: str) -> None:
    response = await h.client.get(f"/v2/models/{name}/ready")
    assert response.status_code == 400
    assert "model name" in response.json()["error"]
    assert h.manager.lookups == []


# -- inference -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_infer_json_answers_json(h: Harness) -> None:
    response = await h.client.post(
        "/v2/models/m/infer", content=orjson.dumps(_infer_doc([1, 2], [3, 4], id="r1"))
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "inference-header-content-length" not in response.headers
    doc = response.json()
    assert (doc["id"], doc["model_name"], doc["model_version"]) == ("r1", "m", "2")
    assert [o["name"] for o in doc["outputs"]] == ["score", "twice"]
    assert doc["outputs"][0]["data"] == [13.0, 24.0]
    assert doc["outputs"][1] == {"name": "twice", "datatype": "INT64", "shape": [2], "data": [2, 4]}


@pytest.mark.anyio
async def test_infer_binary_in_and_out(h: Harness) -> None:
    users = np.array([5, 6, 7], dtype=np.int64)
    items = np.array([1, 2, 3], dtype=np.int64)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "shape": [3],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": 24},
                }
                for n in ("user", "item")
            ],
            "outputs": [{"name": "twice", "parameters": {"binary_data": True}}, {"name": "score"}],
        }
    )
    response = await h.client.post(
        "/v2/models/m/versions/1/infer",
        content=header + users.tobytes() + items.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    doc = orjson.loads(response.content[:length])
    assert doc["model_version"] == "1"
    assert [o["name"] for o in doc["outputs"]] == ["twice", "score"]
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == 24
    assert doc["outputs"][1]["data"] == [51.0, 62.0, 73.0]
    np.testing.assert_array_equal(np.frombuffer(response.content[length:], np.int64), users * 2)


@pytest.mark.anyio
async def test_request_level_binary_output(h: Harness) -> None:
    doc = _infer_doc([1], [1], parameters={"binary_data_output": True})
    response = await h.client.post("/v2/models/m/infer", json=doc)
    length = int(response.headers["inference-header-content-length"])
    outputs = orjson.loads(response.content[:length])["outputs"]
    assert [o["parameters"]["binary_data_size"] for o in outputs] == [4, 8]
    assert len(response.content) == length + 12


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_request_bodies(h: Harness, encoding: str) -> None:
    import zlib

    raw = orjson.dumps(_infer_doc([1, 2], [3, 4]))
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    response = await h.client.post(
        "/v2/models/m/infer", content=body, headers={"Content-Encoding": encoding}
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [13.0, 24.0]


@pytest.mark.anyio
async def test_unknown_content_encoding_is_400(h: Harness) -> None:
    response = await h.client.post(
        "/v2/models/m/infer", content=b"x", headers={"Content-Encoding": "br"}
    )
    assert response.status_code == 400
    assert "Content-Encoding" in response.json()["error"]


@pytest.mark.anyio
async def test_bodies_over_the_limit_are_413_before_inference(h: Harness) -> None:
    doc = _infer_doc(list(range(1000)), list(range(1000)))
    response = await h.client.post("/v2/models/m/infer", content=orjson.dumps(doc))
    assert response.status_code == 413
    bomb = gzip.compress(b" " * 100_000)
    response = await h.client.post(
        "/v2/models/m/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert h.manager.versions[2].seen == []


@pytest.mark.anyio
async def test_unknown_output_is_400_before_inference(h: Harness) -> None:
    doc = _infer_doc([1], [1], outputs=[{"name": "nope"}])
    response = await h.client.post("/v2/models/m/infer", json=doc)
    assert response.status_code == 400
    assert "nope" in response.json()["error"]
    assert h.manager.versions[2].seen == []


@pytest.mark.anyio
async def test_bad_header_length_is_400(h: Harness) -> None:
    body = orjson.dumps(_infer_doc([1], [1]))
    response = await h.client.post(
        "/v2/models/m/infer", content=body, headers={"Inference-Header-Content-Length": "9999"}
    )
    assert response.status_code == 400
    assert "Inference-Header-Content-Length" in response.json()["error"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status", "retry_after"),
    [
        (InvalidInput("input 'user' is bad"), 400, None),
        (ModelNotFound("gone"), 404, None),
        (ModelNotReady("warming"), 503, None),
        (Overloaded("queue full", retry_after_s=2), 503, "2"),
        (QueueTimeout("too slow"), 503, "1"),
        (InferenceFailed("ORT says no"), 500, None),
    ],
)
async def test_serving_errors_map_to_status_codes(
    h: Harness, error: ServingError, status: int, retry_after: str | None
) -> None:
    h.manager.versions[2].fail_with = error
    response = await h.client.post("/v2/models/m/infer", json=_infer_doc([1], [1]))
    assert response.status_code == status
    assert response.json() == {"error": error.message}
    assert response.headers.get("retry-after") == retry_after


@pytest.mark.anyio
async def test_unexpected_exceptions_are_500_with_a_json_body(h: Harness) -> None:
    h.manager.versions[2].fail_with = RuntimeError("boom")
    response = await h.client.post("/v2/models/m/infer", json=_infer_doc([1], [1]))
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert h.counter("infer", 500, "m", "2") == 1


@pytest.mark.anyio
async def test_fastapi_validation_errors_are_400(h: Harness) -> None:
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    h.app.add_api_route("/typed", typed, methods=["GET"])
    response = await h.client.get("/typed", params={"n": "many"})
    assert response.status_code == 400
    assert "n" in response.json()["error"]


@pytest.mark.anyio
async def test_unknown_routes_and_methods_answer_json_errors(h: Harness) -> None:
    response = await h.client.get("/v3/anything")
    assert (response.status_code, set(response.json())) == (404, {"error"})
    response = await h.client.get("/v2/models/m/infer")
    assert (response.status_code, set(response.json())) == (405, {"error"})


# -- repository API ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_repository_api_is_403_without_a_configured_token(no_token: Harness) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/m/load"):
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
            response = await no_token.client.post(path, headers=headers)
            assert response.status_code == 403
            assert "no admin token" in response.json()["error"]
    assert no_token.manager.loaded == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer"]
)
async def test_repository_api_refuses_a_wrong_token(h: Harness, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for action in ("load", "unload"):
        response = await h.client.post(f"/v2/repository/models/m/{action}", headers=headers)
        assert response.status_code == 403
    assert (await h.client.post("/v2/repository/index", headers=headers)).status_code == 403
    assert h.manager.loaded == h.manager.unloaded == []


@pytest.mark.anyio
async def test_repository_api_with_the_token(h: Harness) -> None:
    auth = {"Authorization": f"bearer {TOKEN}"}
    index = (await h.client.post("/v2/repository/index", headers=auth)).json()
    assert {
        "name": "broken",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "bad model.onnx",
    } in (index)
    ready = (await h.client.post("/v2/repository/index", headers=auth, json={"ready": True})).json()
    assert {e["state"] for e in ready} == {"READY"}
    assert (await h.client.post("/v2/repository/models/m/load", headers=auth)).status_code == 200
    assert (await h.client.post("/v2/repository/models/m/unload", headers=auth)).status_code == 200
    assert (h.manager.loaded, h.manager.unloaded) == (["m"], ["m"])
    response = await h.client.post("/v2/repository/models/zz/load", headers=auth)
    assert response.status_code == 404


@pytest.mark.anyio
async def test_load_refuses_config_and_file_overrides(h: Harness) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for parameters in ({"config": "{}"}, {"file:1/model.onnx": "AAAA"}):
        response = await h.client.post(
            "/v2/repository/models/m/load", headers=auth, json={"parameters": parameters}
        )
        assert response.status_code == 400
    response = await h.client.post("/v2/repository/models/..%2F/load", headers=auth)
    assert response.status_code in (400, 404)
    assert h.manager.loaded == []


# -- metrics and logging -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_requests_are_counted_by_endpoint_and_code(h: Harness) -> None:
    await h.client.post("/v2/models/m/versions/1/infer", json=_infer_doc([1], [1]))
    await h.client.post("/v2/models/m/infer", json={"inputs": "bad"})
    await h.client.get("/v2/models/nosuch-model-123/ready")
    await h.client.get("/v2/health/live")
    assert h.counter("infer", 200, "m", "1") == 1
    assert h.counter("infer", 400, "m", "2") == 1
    assert h.counter("model_ready", 404) == 1  # unknown names never become label values
    assert h.counter("health_live", 200) == 1
    registry = h.state.metrics.registry
    count = registry.get_sample_value(
        "recserve_request_duration_seconds_count",
        {"model": "m", "version": "1", "endpoint": "infer"},
    )
    assert count == 1
    assert registry.get_sample_value("recserve_inflight_requests", {"endpoint": "infer"}) == 0
    text = (await h.client.get("/metrics")).text
    assert 'recserve_requests_total{code="200",endpoint="infer",model="m",version="1"} 1.0' in text
    assert "nosuch-model-123" not in text


@pytest.mark.anyio
async def test_request_log_writes_one_json_line_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="recserve.request")
    async for h in _harness(_settings(request_log=True)):
        await h.client.post("/v2/models/m/infer", json=_infer_doc([1], [1]))
        await h.client.get("/v2/models/zz")
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "recserve.request"]
    assert [(x["endpoint"], x["status"], x["model"]) for x in lines] == [
        ("infer", 200, "m"),
        ("model_metadata", 404, ""),
    ]
    assert all(x["duration_ms"] >= 0 for x in lines)


@pytest.mark.anyio
async def test_request_log_is_off_by_default(h: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="recserve.request")
    await h.client.get("/v2/health/live")
    assert not [r for r in caplog.records if r.name == "recserve.request"]


# -- construction --------------------------------------------------------------------------------


def test_nothing_is_built_at_import_time() -> None:
    built = [v for v in vars(service.app).values() if isinstance(v, FastAPI | Settings | Metrics)]
    assert built == []


def test_apps_have_separate_registries() -> None:
    first = create_app(_settings(), manager_factory=FakeManager)
    second = create_app(_settings(), manager_factory=FakeManager)
    assert getattr(first.state, STATE_KEY).metrics.registry is not (
        getattr(second.state, STATE_KEY).metrics.registry
    )


def test_app_from_env_reads_recserve_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_MAX_REQUEST_BYTES", "123456")
    monkeypatch.setenv("RECSERVE_BATCHING__MAX_BATCH_ROWS", "77")
    state: AppState = getattr(app_from_env().state, STATE_KEY)
    assert state.settings.max_request_bytes == 123456
    assert state.settings.batching.max_batch_rows == 77
