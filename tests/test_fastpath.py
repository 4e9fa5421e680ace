"""The fast path: inference routes answered without FastAPI's router, exactly as FastAPI answers."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRouter
from starlette.types import Receive, Scope, Send

from service.app import create_app
from service.errors import Overloaded, QueueTimeout
from service.http.fastpath import FastPath, fast_routes, without_builtin_telemetry
from service.http.state import STATE_KEY, AppState
from service.settings import Settings
from service.v1.routes import create_router as create_v1_router
from service.v2 import create_router
from tests.test_app import FakeManager

Answer = tuple[int, bytes, dict[str, str]]
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "retry-after",
    "inference-header-content-length",
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def infer_doc(users: list[int], items: list[int], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "user", "shape": [len(users)], "datatype": "INT64", "data": users},
            {"name": "item", "shape": [len(items)], "datatype": "INT64", "data": items},
        ],
        **extra,
    }


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


class Served:
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

    def samples(self) -> dict[tuple[str, ...], float]:
        """Every request counter and duration count, by labels."""
        found: dict[tuple[str, ...], float] = {}
        for family in self.state.metrics.registry.collect():
            if family.name not in ("recserve_requests", "recserve_request_duration_seconds"):
                continue
            for sample in family.samples:
                if sample.name.endswith(("_total", "_count")):
                    found[(sample.name, *sorted(sample.labels.items()))] = sample.value  # type: ignore[arg-type]
        return found

    async def answer(self, method: str, path: str, **kwargs: Any) -> Answer:
        response = await self.client.request(method, path, **kwargs)
        headers = {k: response.headers[k] for k in COMPARED_HEADERS if k in response.headers}
        return response.status_code, response.content, headers


async def serve(fast: bool) -> AsyncIterator[Served]:
    factory: Any = FakeManager
    app = create_app(Settings(poll_interval_s=0, max_request_bytes=4096), manager_factory=factory)
    if not fast:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield Served(app, client)


@pytest.fixture
async def fast() -> AsyncIterator[Served]:
    async for served in serve(fast=True):
        yield served


@pytest.fixture
async def plain() -> AsyncIterator[Served]:
    async for served in serve(fast=False):
        yield served


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
    fast: Served, router_calls: list[str]
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


def test_match_uses_each_routes_own_pattern() -> None:
    routes = [*create_router().routes, *create_v1_router().routes]
    assert sorted({r.name for r in fast_routes(routes)}) == ["infer", "recommend", "score"]

    async def unused(*args: Any) -> Any:
        raise AssertionError("only matching is tried here")

    path = FastPath(unused, routes=routes, on_error=unused)
    found = path.match("/v2/models/m-1.a/versions/12/infer")
    assert found is not None and found[1] == {"model": "m-1.a", "version": "12"}
    found = path.match("/v1/models/m/score")
    assert found is not None and (found[0].name, found[1]) == ("score", {"model": "m"})
    for other in ("/v2/models/m/ready", "/v2/models/m/infer/", "/v1/models/m/infer", "/v3/x"):
        assert path.match(other) is None


@pytest.mark.anyio
async def test_a_root_path_is_stripped_as_the_router_does(fast: Served) -> None:
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
    ]


@pytest.mark.anyio
async def test_answers_and_metrics_equal_fastapis(fast: Served, plain: Served) -> None:
    for served in (fast, plain):
        served.manager.versions[1].fail_with = Overloaded("queue full", retry_after_s=3)
    got = [await fast.answer(method, path, **kw) for method, path, kw in requests()]
    expected = [await plain.answer(method, path, **kw) for method, path, kw in requests()]
    assert [answer[0] for answer in got] == [200, 503, 200, 400, 400, 413, 404, 400, 400, 404, 404]
    assert got == expected
    assert got[1][2]["retry-after"] == "3"
    assert fast.samples() == plain.samples()


@pytest.mark.anyio
async def test_errors_raised_while_computing_are_answered_in_one_place(fast: Served) -> None:
    fast.manager.versions[2].fail_with = QueueTimeout("waited too long")
    response = await fast.client.post("/v2/models/m/infer", json=infer_doc([1], [2]))
    assert (response.status_code, response.json()) == (503, {"error": "waited too long"})
    assert response.headers["retry-after"] == "1" and "x-request-id" in response.headers


# -- FastAPI's own telemetry ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_fastapis_telemetry_is_not_consulted_per_request(
    fast: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not without_builtin_telemetry():
        pytest.skip("this FastAPI has no built-in telemetry")
    from opentelemetry import trace

    def fail() -> None:
        raise AssertionError("telemetry consulted")

    monkeypatch.setattr(trace, "get_tracer_provider", fail)
    response = await fast.client.post("/v2/models/m/infer", json=infer_doc([1], [2]))
    assert response.status_code == 200
