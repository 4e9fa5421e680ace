"""The fast path: inference routes answered without FastAPI's router, exactly as FastAPI answers,
and the endpoint table it is derived from."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.routing import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

import service.app
from service.endpoints import ENDPOINTS, build_routes
from service.errors import Overloaded, QueueTimeout
from service.http.admission import admitted
from service.http.fastpath import FastPath, without_builtin_telemetry
from service.http.routing import Endpoint, per_version
from service.http.state import app_state
from tests.app_harness import Harness, infer_doc, serving


def binary_body() -> tuple[bytes, dict[str, str]]:
    users = np.array([1, 2], dtype=np.int64).tobytes()
    items = np.array([3, 4], dtype=np.int64).tobytes()
    header = orjson.dumps(
        {
            "inputs": [
                {"name": "user", "shape": [2], "datatype": "INT64"},
                {"name": "item", "shape": [2], "datatype": "INT64"},
            ]
        }
    )
    header = header.replace(b'"INT64"}', b'"INT64","parameters":{"binary_data_size":16}}')
    return header + users + items, {"Inference-Header-Content-Length": str(len(header))}


@pytest.fixture
async def fast() -> AsyncIterator[Harness]:
    async with serving() as harness:
        yield harness


@pytest.fixture
async def plain() -> AsyncIterator[Harness]:
    async with serving(fast_path=False) as harness:
        yield harness


@pytest.fixture
def router_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths that reached FastAPI's router."""
    calls: list[str] = []
    original = APIRouter.__call__

    async def recording(self: APIRouter, scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["path"])
        await original(self, scope, receive, send)

    monkeypatch.setattr(APIRouter, "__call__", recording)
    return calls


# -- which requests take it ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_inference_routes_never_reach_the_router(
    fast: Harness, router_calls: list[str]
) -> None:
    for version in ("2", "1"):
        path = "/v2/models/m/infer" if version == "2" else "/v2/models/m/versions/1/infer"
        response = await fast.client.post(path, json=infer_doc([1], [2]))
        assert (response.status_code, response.json()["model_version"]) == (200, version)
    for path in ("/v1/models/nope/score", "/v1/models/nope/versions/3/recommend"):
        response = await fast.client.post(path, json={"user_id": "u", "item_ids": ["i"]})
        assert response.status_code == 404  # answered by the endpoint: the model is unknown
    assert router_calls == []
    assert (await fast.client.get("/v2/health/live")).status_code == 200
    assert (await fast.client.get("/v2/models/m/infer")).status_code == 405
    assert (await fast.client.post("/v2/models/m/ready")).status_code == 405
    assert router_calls == ["/v2/health/live", "/v2/models/m/infer", "/v2/models/m/ready"]


def test_match_uses_each_routes_own_pattern_and_method() -> None:
    routes = build_routes(ENDPOINTS)
    assert sorted({r.name for r in routes.inference}) == ["infer", "recommend", "score"]

    async def unused(*args: Any) -> Any:
        raise AssertionError("only matching is tried here")

    path = FastPath(unused, routes=routes.inference)
    found = path.match("/v2/models/m-1.a/versions/12/infer", "POST")
    assert found is not None and found[1] == {"model": "m-1.a", "version": "12"}
    found = path.match("/v1/models/m/score", "POST")
    assert found is not None and (found[0].name, found[1]) == ("score", {"model": "m"})
    for other in ("/v2/models/m/ready", "/v2/models/m/infer/", "/v1/models/m/infer", "/v3/x"):
        assert path.match(other, "POST") is None
    assert path.match("/v2/models/m/infer", "GET") is None


@pytest.mark.anyio
async def test_every_inference_endpoint_of_the_table_is_fast_and_measured(
    fast: Harness, router_calls: list[str]
) -> None:
    inference = [endpoint for endpoint in ENDPOINTS if endpoint.inference]
    assert inference
    for endpoint in inference:
        assert fast.value("recserve_inflight_requests", endpoint=endpoint.name) == 0
        for path in endpoint.paths:
            url = path.format(model="m", version="1")
            response = await fast.client.request(endpoint.method, url, content=b"{}")
            assert response.status_code == 400  # admitted, then the body is refused
        for version in ("1", "2"):  # with and without a version: the latest, 2
            timed = {"model": "m", "version": version, "endpoint": endpoint.name}
            assert fast.value("recserve_request_duration_seconds_count", **timed) == 1
    assert router_calls == []


@pytest.mark.anyio
async def test_a_new_inference_endpoint_is_served_fast_with_its_gauge(
    monkeypatch: pytest.MonkeyPatch, router_calls: list[str]
) -> None:
    seen: list[float | None] = []

    async def echo(request: Request) -> Response:
        async def handle(body: bytes, version: Any) -> Response:
            registry = app_state(request).metrics.registry
            seen.append(
                registry.get_sample_value("recserve_inflight_requests", {"endpoint": "echo"})
            )
            return Response(body)

        return await admitted(request, handle)

    added = Endpoint("echo", per_version("/v2/models/{model}", "/echo"), echo, "POST", True)
    monkeypatch.setattr(service.app, "ENDPOINTS", (*ENDPOINTS, added))
    async with serving() as harness:
        assert harness.value("recserve_inflight_requests", endpoint="echo") == 0
        response = await harness.client.post("/v2/models/m/versions/1/echo", content=b"hi")
        assert (response.status_code, response.content, seen) == (200, b"hi", [1.0])
        assert harness.value("recserve_inflight_requests", endpoint="echo") == 0
        labels = {"model": "m", "version": "1", "endpoint": "echo"}
        assert harness.value("recserve_request_duration_seconds_count", **labels) == 1
        schema = harness.app.openapi()["paths"]
        assert {"/v2/models/{model}/echo", "/v2/models/{model}/versions/{version}/echo"} <= set(
            schema
        )
    assert router_calls == []


@pytest.mark.anyio
async def test_a_root_path_is_stripped_as_the_router_does(fast: Harness) -> None:
    fast.app.root_path = "/api"
    response = await fast.client.post("/api/v2/models/m/infer", json=infer_doc([1], [2]))
    assert response.status_code == 200


# -- same answers as FastAPI ---------------------------------------------------------------------


def requests() -> list[tuple[str, str, dict[str, Any]]]:
    body, headers = binary_body()
    return [
        ("POST", "/v2/models/m/infer", {"json": infer_doc([1, 2], [3, 4], id="r1")}),
        ("POST", "/v2/models/m/versions/1/infer", {"content": body, "headers": headers}),
        (
            "POST",
            "/v2/models/m/infer",
            {
                "content": gzip.compress(orjson.dumps(infer_doc([1], [2]))),
                "headers": {"Content-Encoding": "gzip"},
            },
        ),
        ("POST", "/v2/models/m/infer", {"json": {"inputs": "bad"}}),
        ("POST", "/v2/models/m/infer", {"json": infer_doc([1], [2], outputs=[{"name": "x"}])}),
        ("POST", "/v2/models/m/infer", {"content": b"x" * 5000}),
        ("POST", "/v2/models/zz/infer", {"json": infer_doc([1], [2])}),
        ("POST", "/v2/models/m/versions/0/infer", {"json": infer_doc([1], [2])}),
        ("POST", "/v2/models/BAD!/infer", {"json": infer_doc([1], [2])}),
        ("POST", "/v1/models/zz/score", {"json": {"user_id": "u", "item_ids": ["i"]}}),
        ("POST", "/v1/models/zz/versions/2/recommend", {"json": {"user_id": "u"}}),
        ("POST", "/v1/models/m/score", {"json": {"user_id": "u1", "item_ids": ["i2", "x"]}}),
        ("POST", "/v1/models/m/recommend", {"json": {"user_id": "u1", "k": 0}}),
    ]


@pytest.mark.anyio
async def test_answers_and_metrics_equal_fastapis(fast: Harness, plain: Harness) -> None:
    for served in (fast, plain):
        served.version(1).fail_with = Overloaded("queue full", retry_after_s=3)
    got = [await fast.answer(method, path, **kw) for method, path, kw in requests()]
    expected = [await plain.answer(method, path, **kw) for method, path, kw in requests()]
    assert [answer[0] for answer in got] == [
        200,
        503,
        200,
        400,
        400,
        413,
        404,
        400,
        400,
        404,
        404,
        200,
        400,
    ]
    assert got == expected
    assert got[1][2]["retry-after"] == "3"
    assert fast.samples() == plain.samples()


@pytest.mark.anyio
async def test_errors_raised_while_computing_are_answered_in_one_place(fast: Harness) -> None:
    fast.version(2).fail_with = QueueTimeout("waited too long")
    response = await fast.client.post("/v2/models/m/infer", json=infer_doc([1], [2]))
    assert (response.status_code, response.json()) == (503, {"error": "waited too long"})
    assert response.headers["retry-after"] == "1" and "x-request-id" in response.headers


# -- FastAPI's own telemetry ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_fastapis_telemetry_is_not_consulted_per_request(
    fast: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not without_builtin_telemetry():
        pytest.skip("this FastAPI has no built-in telemetry")
    from opentelemetry import trace

    def fail() -> None:
        raise AssertionError("telemetry consulted")

    monkeypatch.setattr(trace, "get_tracer_provider", fail)
    response = await fast.client.post("/v2/models/m/infer", json=infer_doc([1], [2]))
    assert response.status_code == 200
