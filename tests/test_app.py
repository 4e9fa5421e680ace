"""The app in-process over a stand-in reconciler: routing, error mapping, auth, limits, metrics,
the endpoint table, and what /v1 reads from a version's signature."""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator

import numpy as np
import orjson
import pytest
from fastapi import FastAPI

import service.app
from modelrepo import InputSpec, Role, Signature, Source, two_id_signature
from service.app import app_from_env
from service.endpoints import ENDPOINTS, build_routes
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
from service.metrics.families import INFERENCE_ENDPOINTS, Metrics
from service.settings import Settings
from tests.app_harness import TOKEN, FakeReconciler, Harness, build_app, infer_doc, serving


@pytest.fixture
async def no_token() -> AsyncIterator[Harness]:
    async with serving() as harness:
        yield harness


# -- health and metadata -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_starts_and_stops_the_reconciler() -> None:
    app = build_app()
    state: AppState = getattr(app.state, STATE_KEY)
    assert state.reconciler is None
    async with app.router.lifespan_context(app):
        reconciler = state.reconciler
        assert isinstance(reconciler, FakeReconciler)
        assert reconciler.started and not reconciler.stopped
    assert reconciler.stopped
    assert state.lifecycle.draining


@pytest.mark.anyio
async def test_health_and_server_metadata(served: Harness) -> None:
    assert (await served.client.get("/v2/health/live")).status_code == 200
    assert (await served.client.get("/v2/health/ready")).status_code == 200
    meta = (await served.client.get("/v2")).json()
    assert meta["name"] == "recserve"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


@pytest.mark.anyio
async def test_ready_is_503_while_the_registry_is_not_ready(served: Harness) -> None:
    served.reconciler.ready = False
    response = await served.client.get("/v2/health/ready")
    assert response.status_code == 503
    assert "error" in response.json()


@pytest.mark.anyio
async def test_draining_turns_readiness_false_and_refuses_inference(served: Harness) -> None:
    served.state.lifecycle.begin_drain()
    assert (await served.client.get("/v2/health/ready")).status_code == 503
    assert (await served.client.get("/v2/health/live")).status_code == 200
    response = await served.client.post("/v2/models/m/infer", json=infer_doc([1], [2]))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert "shutting down" in response.json()["error"]
    assert response.headers["connection"] == "close"
    assert served.version(2).seen == []


@pytest.mark.anyio
async def test_model_metadata_ready_config_and_stats_by_version(served: Harness) -> None:
    meta = (await served.client.get("/v2/models/m")).json()
    assert meta["versions"] == ["1", "2"]
    assert meta["outputs"][1] == {"name": "twice", "datatype": "INT64", "shape": [-1]}
    assert (await served.client.get("/v2/models/m/versions/1/ready")).status_code == 200
    assert served.reconciler.lookups[-1] == ("m", 1)
    config = (await served.client.get("/v2/models/m/versions/2/config")).json()
    assert config["max_batch_size"] == served.state.settings.batching.max_batch_rows
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == (
        served.state.settings.batching.max_queue_delay_us
    )
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    served.version(1).stats.inference_count = 7
    stats = (await served.client.get("/v2/models/m/stats")).json()["model_stats"]
    assert [(s["version"], s["inference_count"]) for s in stats] == [("1", 7), ("2", 0)]
    one = (await served.client.get("/v2/models/m/versions/1/stats")).json()["model_stats"]
    assert [s["version"] for s in one] == ["1"]
    every = (await served.client.get("/v2/models/stats")).json()["model_stats"]
    assert [s["version"] for s in every] == ["1", "2"]


@pytest.mark.anyio
@pytest.mark.parametrize("version", ["0", "01", "-2", "1.0", "x", "1e3", "9" * 30])
async def test_versions_that_are_not_positive_integers_are_400(
    served: Harness, version: str
) -> None:
    response = await served.client.get(f"/v2/models/m/versions/{version}/ready")
    assert response.status_code == 400
    assert "version" in response.json()["error"]
    assert served.reconciler.lookups == []


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["M", "-m", ".hidden", "a" * 65, "m%00", "%2e%2e", "m%20x"])
async def test_bad_model_names_never_reach_the_registry(served: Harness, name: str) -> None:
    response = await served.client.get(f"/v2/models/{name}/ready")
    assert response.status_code == 400
    assert "model name" in response.json()["error"]
    assert served.reconciler.lookups == []


# -- inference -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_infer_json_answers_json(served: Harness) -> None:
    response = await served.client.post(
        "/v2/models/m/infer", content=orjson.dumps(infer_doc([1, 2], [3, 4], id="r1"))
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
async def test_infer_binary_in_and_out(served: Harness) -> None:
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
    response = await served.client.post(
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
async def test_request_level_binary_output(served: Harness) -> None:
    doc = infer_doc([1], [1], parameters={"binary_data_output": True})
    response = await served.client.post("/v2/models/m/infer", json=doc)
    length = int(response.headers["inference-header-content-length"])
    outputs = orjson.loads(response.content[:length])["outputs"]
    assert [o["parameters"]["binary_data_size"] for o in outputs] == [4, 8]
    assert len(response.content) == length + 12


@pytest.mark.anyio
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_request_bodies(served: Harness, encoding: str) -> None:
    import zlib

    raw = orjson.dumps(infer_doc([1, 2], [3, 4]))
    body = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    response = await served.client.post(
        "/v2/models/m/infer", content=body, headers={"Content-Encoding": encoding}
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [13.0, 24.0]


@pytest.mark.anyio
async def test_unknown_content_encoding_is_400(served: Harness) -> None:
    response = await served.client.post(
        "/v2/models/m/infer", content=b"x", headers={"Content-Encoding": "br"}
    )
    assert response.status_code == 400
    assert "Content-Encoding" in response.json()["error"]


@pytest.mark.anyio
async def test_bodies_over_the_limit_are_413_before_inference(served: Harness) -> None:
    doc = infer_doc(list(range(1000)), list(range(1000)))
    response = await served.client.post("/v2/models/m/infer", content=orjson.dumps(doc))
    assert response.status_code == 413
    bomb = gzip.compress(b" " * 100_000)
    response = await served.client.post(
        "/v2/models/m/infer", content=bomb, headers={"Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert served.version(2).seen == []


@pytest.mark.anyio
async def test_unknown_output_is_400_before_inference(served: Harness) -> None:
    doc = infer_doc([1], [1], outputs=[{"name": "nope"}])
    response = await served.client.post("/v2/models/m/infer", json=doc)
    assert response.status_code == 400
    assert "nope" in response.json()["error"]
    assert served.version(2).seen == []


@pytest.mark.anyio
async def test_bad_header_length_is_400(served: Harness) -> None:
    body = orjson.dumps(infer_doc([1], [1]))
    response = await served.client.post(
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
        (ModelNotReady("warming"), 503, "1"),
        (Overloaded("queue full", retry_after_s=2), 503, "2"),
        (QueueTimeout("too slow"), 503, "1"),
        (InferenceFailed("ORT says no"), 500, None),
    ],
)
async def test_serving_errors_map_to_status_codes(
    served: Harness, error: ServingError, status: int, retry_after: str | None
) -> None:
    served.version(2).fail_with = error
    response = await served.client.post("/v2/models/m/infer", json=infer_doc([1], [1]))
    assert response.status_code == status
    assert response.json() == {"error": error.message}
    assert response.headers.get("retry-after") == retry_after


@pytest.mark.anyio
async def test_unexpected_exceptions_are_500_with_a_json_body(served: Harness) -> None:
    served.version(2).fail_with = RuntimeError("boom")
    response = await served.client.post("/v2/models/m/infer", json=infer_doc([1], [1]))
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert served.counter("infer", 500, "m", "2") == 1


@pytest.mark.anyio
async def test_fastapi_validation_errors_are_400(served: Harness) -> None:
    async def typed(n: int) -> dict[str, int]:
        return {"n": n}

    served.app.add_api_route("/typed", typed, methods=["GET"])
    response = await served.client.get("/typed", params={"n": "many"})
    assert response.status_code == 400
    assert "n" in response.json()["error"]


@pytest.mark.anyio
async def test_unknown_routes_and_methods_answer_json_errors(served: Harness) -> None:
    response = await served.client.get("/v3/anything")
    assert (response.status_code, set(response.json())) == (404, {"error"})
    response = await served.client.get("/v2/models/m/infer")
    assert (response.status_code, set(response.json())) == (405, {"error"})


# -- /v1 over the signature ----------------------------------------------------------------------


def renamed_signature() -> Signature:
    """The two-id signature with other input and output names."""
    base = two_id_signature(10, 10)
    return Signature(
        inputs=tuple(s.model_copy(update={"name": f"{s.name}_row"}) for s in base.inputs),
        outputs=(base.outputs[0].model_copy(update={"name": "p"}),),
        score="p",
    )


@pytest.mark.anyio
@pytest.mark.parametrize("signature", [two_id_signature(10, 10), renamed_signature()])
async def test_v1_feeds_the_inputs_its_signature_names(
    served: Harness, signature: Signature
) -> None:
    version = served.version(2)
    version.signature = signature
    body = {"user_id": "u3", "item_ids": ["i1", "i9", "nope"]}
    got = (await served.client.post("/v1/models/m/score", json=body)).json()
    assert got["scores"] == [31.0, 39.0, 30.0]  # user row 3, item rows 1, 9 and 0 (unknown)
    assert got["unknown"] == {"user_id": False, "item_ids": ["nope"]}
    (fed,) = version.seen
    assert sorted(fed) == sorted(spec.name for spec in signature.inputs)
    best = await served.client.post("/v1/models/m/recommend", json={"user_id": "u2", "k": 3})
    items = best.json()["items"]
    assert [(i["item_id"], i["score"]) for i in items] == [("i9", 29.0), ("i8", 28.0), ("i7", 27.0)]


def two_ids_and(*extra: InputSpec, skip: int = 0) -> Signature:
    """The two-id signature less its first ``skip`` inputs, plus ``extra`` inputs."""
    base = two_id_signature(10, 10)
    return Signature(inputs=(*base.inputs[skip:], *extra), outputs=base.outputs, score=base.score)


# A categorical context feature without a vocabulary: /v1 could not read a caller's values.
DEVICE = InputSpec(
    name="device", role=Role.ID, source=Source.CONTEXT, dtype="INT64", shape=(-1,), n_rows=3
)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("signature", "named"),
    [
        (two_ids_and(DEVICE), "input 'device'"),
        (two_ids_and(skip=1), "no input for the request's user"),
    ],
)
async def test_v1_refuses_a_signature_it_cannot_serve_yet(
    served: Harness, signature: Signature, named: str
) -> None:
    served.version(2).signature = signature
    for path, body in (
        ("/v1/models/m/score", {"user_id": "u1", "item_ids": ["i1"]}),
        ("/v1/models/m/recommend", {"user_id": "u1"}),
    ):
        response = await served.client.post(path, json=body)
        assert response.status_code == 400
        error = response.json()["error"]
        assert named in error and "/v1 cannot serve it yet (V2 infer can)" in error
    assert served.version(2).seen == []


# -- repository API ------------------------------------------------------------------------------


PUBLIC_INDEX = [
    {"name": "m", "version": "1", "state": "READY", "reason": ""},
    {"name": "m", "version": "2", "state": "READY", "reason": ""},
    {"name": "broken", "version": "1", "state": "UNAVAILABLE", "reason": "failed to load"},
]


@pytest.mark.anyio
async def test_repository_api_is_403_without_a_configured_token(no_token: Harness) -> None:
    for path in ("/v2/repository/index", "/v2/repository/models/m/load"):
        for headers in ({"Authorization": "Bearer "}, {"Authorization": f"Bearer {TOKEN}"}):
            response = await no_token.client.post(path, headers=headers)
            assert response.status_code == 403
            assert "no admin token" in response.json()["error"]
    load = await no_token.client.post("/v2/repository/models/m/load")
    assert load.status_code == 403
    assert "no admin token" in load.json()["error"]
    assert no_token.reconciler.loaded == []
    # The index is read-only: without credentials it answers, with the public reasons.
    index = await no_token.client.post("/v2/repository/index")
    assert index.status_code == 200
    assert index.json() == PUBLIC_INDEX


@pytest.mark.anyio
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer"]
)
async def test_repository_api_refuses_a_wrong_token(
    served: Harness, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    # No credentials at all: 401 naming the scheme; credentials that are not the token: 403.
    expected = 403 if headers else 401
    for action in ("load", "unload"):
        response = await served.client.post(f"/v2/repository/models/m/{action}", headers=headers)
        assert response.status_code == expected
        if expected == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
    # The index needs no credentials, but refuses wrong ones rather than answer less.
    for index in (
        await served.client.post("/v2/repository/index", headers=headers),
        await served.client.get("/v2/models", headers=headers),
    ):
        assert index.status_code == (403 if headers else 200)
    assert served.reconciler.loaded == served.reconciler.unloaded == []


@pytest.mark.anyio
async def test_the_index_without_credentials_hides_the_failure_reasons(served: Harness) -> None:
    """The reason a version failed ("bad model.onnx" here) can name files and library messages:
    read without the token, the index says only that it failed; GET /v2/models is the same."""
    assert (await served.client.post("/v2/repository/index")).json() == PUBLIC_INDEX
    assert (await served.client.get("/v2/models")).json() == PUBLIC_INDEX
    ready = await served.client.post("/v2/repository/index", json={"ready": True})
    assert ready.json() == PUBLIC_INDEX[:2]
    detailed = await served.client.get("/v2/models", headers={"Authorization": f"Bearer {TOKEN}"})
    assert detailed.json()[2]["reason"] == "bad model.onnx"


@pytest.mark.anyio
async def test_repository_api_with_the_token(served: Harness) -> None:
    auth = {"Authorization": f"bearer {TOKEN}"}
    index = (await served.client.post("/v2/repository/index", headers=auth)).json()
    assert {
        "name": "broken",
        "version": "1",
        "state": "UNAVAILABLE",
        "reason": "bad model.onnx",
    } in (index)
    ready = (
        await served.client.post("/v2/repository/index", headers=auth, json={"ready": True})
    ).json()
    assert {e["state"] for e in ready} == {"READY"}
    assert (
        await served.client.post("/v2/repository/models/m/load", headers=auth)
    ).status_code == 200
    assert (
        await served.client.post("/v2/repository/models/m/unload", headers=auth)
    ).status_code == 200
    assert (served.reconciler.loaded, served.reconciler.unloaded) == (["m"], ["m"])
    response = await served.client.post("/v2/repository/models/zz/load", headers=auth)
    assert response.status_code == 404


@pytest.mark.anyio
async def test_load_refuses_config_and_file_overrides(served: Harness) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for parameters in ({"config": "{}"}, {"file:1/model.onnx": "AAAA"}):
        response = await served.client.post(
            "/v2/repository/models/m/load", headers=auth, json={"parameters": parameters}
        )
        assert response.status_code == 400
    response = await served.client.post("/v2/repository/models/..%2F/load", headers=auth)
    assert response.status_code in (400, 404)
    assert served.reconciler.loaded == []


# -- metrics and logging -------------------------------------------------------------------------


@pytest.mark.anyio
async def test_requests_are_counted_by_endpoint_and_code(served: Harness) -> None:
    await served.client.post("/v2/models/m/versions/1/infer", json=infer_doc([1], [1]))
    await served.client.post("/v2/models/m/infer", json={"inputs": "bad"})
    await served.client.get("/v2/models/nosuch-model-123/ready")
    await served.client.get("/v2/health/live")
    assert served.counter("infer", 200, "m", "1") == 1
    assert served.counter("infer", 400, "m", "2") == 1
    assert served.counter("model_ready", 404) == 1  # unknown names never become label values
    assert served.counter("health_live", 200) == 1
    registry = served.state.metrics.registry
    count = registry.get_sample_value(
        "recserve_request_duration_seconds_count",
        {"model": "m", "version": "1", "endpoint": "infer"},
    )
    assert count == 1
    assert registry.get_sample_value("recserve_inflight_requests", {"endpoint": "infer"}) == 0
    text = (await served.client.get("/metrics")).text
    assert 'recserve_requests_total{code="200",endpoint="infer",model="m",version="1"} 1.0' in text
    assert "nosuch-model-123" not in text


@pytest.mark.anyio
async def test_request_log_writes_one_json_line_per_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="recserve.request")
    async with serving(request_log=True) as logged:
        await logged.client.post("/v2/models/m/infer", json=infer_doc([1], [1]))
        await logged.client.get("/v2/models/zz")
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "recserve.request"]
    assert [(x["endpoint"], x["status"], x["model"]) for x in lines] == [
        ("infer", 200, "m"),
        ("model_metadata", 404, ""),
    ]
    assert all(x["duration_ms"] >= 0 for x in lines)


@pytest.mark.anyio
async def test_request_log_is_off_by_default(
    served: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recserve.request")
    await served.client.get("/v2/health/live")
    assert not [r for r in caplog.records if r.name == "recserve.request"]


# -- construction --------------------------------------------------------------------------------


def test_nothing_is_built_at_import_time() -> None:
    built = [v for v in vars(service.app).values() if isinstance(v, FastAPI | Settings | Metrics)]
    assert built == []


def test_apps_have_separate_registries() -> None:
    first, second = build_app(), build_app()
    assert getattr(first.state, STATE_KEY).metrics.registry is not (
        getattr(second.state, STATE_KEY).metrics.registry
    )


def test_app_from_env_reads_recserve_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSERVE_MAX_REQUEST_BYTES", "123456")
    monkeypatch.setenv("RECSERVE_BATCHING__MAX_BATCH_ROWS", "77")
    state: AppState = getattr(app_from_env().state, STATE_KEY)
    assert state.settings.max_request_bytes == 123456
    assert state.settings.batching.max_batch_rows == 77


def test_the_metrics_default_names_the_tables_inference_endpoints() -> None:
    names = build_routes(ENDPOINTS).inference_endpoints
    assert sorted(names) == sorted(INFERENCE_ENDPOINTS) == ["infer", "recommend", "score"]


def test_metrics_without_a_gauge_for_an_inference_endpoint_are_refused() -> None:
    with pytest.raises(ValueError, match="recommend"):
        build_app(metrics=Metrics(inference_endpoints=("infer", "score")))
