"""The request observer: request ids, error logging, request counting and timing, request log."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from fastapi import FastAPI
from starlette.types import Message

import service.http.observer
from service.app import create_app
from service.errors import InferenceFailed, InvalidInput, Overloaded
from service.http.state import STATE_KEY, AppState
from service.settings import Settings
from tests.test_app import FakeManager

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def infer_doc(users: list[int], items: list[int]) -> dict[str, Any]:
    return {
        "inputs": [
            {"name": "user", "shape": [len(users)], "datatype": "INT64", "data": users},
            {"name": "item", "shape": [len(items)], "datatype": "INT64", "data": items},
        ]
    }


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
        manager: object = self.state.manager
        assert isinstance(manager, FakeManager)
        return manager

    def value(self, name: str, **labels: str) -> float | None:
        return self.state.metrics.registry.get_sample_value(name, labels)


async def serve(**settings: Any) -> AsyncIterator[Served]:
    factory: Any = FakeManager
    app = create_app(Settings(poll_interval_s=0, **settings), manager_factory=factory)
    # Exceptions raised out of the app fail the test: the observer must answer every one.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield Served(app, client)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async for value in serve():
        yield value


@pytest.fixture
async def logged() -> AsyncIterator[Served]:
    async for value in serve(request_log=True):
        yield value


# -- request ids ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_answer_carries_a_request_id(served: Served) -> None:
    served.manager.versions[1].fail_with = Overloaded("queue full")
    responses = [
        await served.client.post("/v2/models/m/infer", json=infer_doc([1], [1])),  # 200
        await served.client.post("/v2/models/m/infer", json={"inputs": "bad"}),  # 400
        await served.client.get("/v3/nothing"),  # 404, no route
        await served.client.get("/v2/models/m/infer"),  # 405
        await served.client.post("/v2/models/m/versions/1/infer", json=infer_doc([1], [1])),
        await served.client.get("/metrics"),
    ]
    assert [r.status_code for r in responses] == [200, 400, 404, 405, 503, 200]
    ids = [r.headers["x-request-id"] for r in responses]
    assert all(HEX_ID.fullmatch(rid) for rid in ids)
    assert len(set(ids)) == len(ids)


@pytest.mark.anyio
async def test_the_callers_request_id_is_returned(served: Served) -> None:
    response = await served.client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unhandled_exception_is_logged_with_traceback_and_answered_500(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.manager.versions[2].fail_with = RuntimeError("boom")
    response = await served.client.post(
        "/v2/models/m/infer", json=infer_doc([1], [1]), headers={"X-Request-ID": "r-500"}
    )
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error"}
    assert response.headers["x-request-id"] == "r-500"
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "r-500" in record.getMessage()
    assert record.exc_info is not None and str(record.exc_info[1]) == "boom"
    count = served.value(
        "recserve_requests_total", model="m", version="2", endpoint="infer", code="500"
    )
    assert count == 1


@pytest.mark.anyio
async def test_inference_failure_is_logged_with_traceback(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    served.manager.versions[2].fail_with = InferenceFailed("ORT says no")
    response = await served.client.post(
        "/v2/models/m/infer", json=infer_doc([1], [1]), headers={"X-Request-ID": "r-ort"}
    )
    assert response.status_code == 500
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "r-ort" in record.getMessage() and "ORT says no" in record.getMessage()
    assert record.exc_info is not None


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status"), [(InvalidInput("bad rows"), 400), (Overloaded("queue full"), 503)]
)
async def test_client_errors_and_refusals_are_logged_at_debug_with_their_message(
    served: Served, caplog: pytest.LogCaptureFixture, error: Exception, status: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="service")
    served.manager.versions[2].fail_with = error
    response = await served.client.post(
        "/v2/models/m/infer", json=infer_doc([1], [1]), headers={"X-Request-ID": "r-4xx"}
    )
    assert response.status_code == status
    records = [r for r in caplog.records if "r-4xx" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert str(error) in records[0].getMessage()
    assert records[0].exc_info is None


@pytest.mark.anyio
async def test_a_client_gone_before_its_body_is_counted_499(served: Served) -> None:
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        messages.append(message)

    await served.app(_scope("POST", "/v2/models/m/infer"), receive, send)
    count = served.value(
        "recserve_requests_total", model="", version="", endpoint="infer", code="499"
    )
    assert count == 1


# -- timing and in-flight ------------------------------------------------------------------------


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
        "state": {},
    }


@pytest.mark.anyio
async def test_duration_runs_from_the_headers_so_a_slow_upload_counts(served: Served) -> None:
    body = orjson.dumps(infer_doc([1], [1]))
    sent: list[Message] = []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            await asyncio.sleep(10)  # no disconnect while the answer is computed
        delivered = True
        await asyncio.sleep(0.05)  # the body arrives 50 ms after the headers
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await served.app(_scope("POST", "/v2/models/m/infer", headers), receive, send)
    assert sent[0]["status"] == 200
    labels = {"model": "m", "version": "2", "endpoint": "infer"}
    total = served.value("recserve_request_duration_seconds_sum", **labels)
    assert total is not None and total >= 0.05


@pytest.mark.anyio
async def test_inflight_counts_requests_being_computed(served: Served) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    version = served.manager.versions[2]
    computed = version.infer

    async def slow(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        started.set()
        await release.wait()
        return await computed(inputs)

    version.infer = slow  # type: ignore[method-assign]
    request = asyncio.ensure_future(
        served.client.post("/v2/models/m/infer", json=infer_doc([1], [1]))
    )
    await started.wait()
    assert served.value("recserve_inflight_requests", endpoint="infer") == 1
    release.set()
    assert (await request).status_code == 200
    assert served.value("recserve_inflight_requests", endpoint="infer") == 0


# -- request log ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_request_log_line_carries_the_request_id_and_error(
    logged: Served, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="recserve.request")
    ok = await logged.client.post("/v2/models/m/infer", json=infer_doc([1], [1]))
    bad = await logged.client.post("/v2/models/m/infer", json={"inputs": "bad"})
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "recserve.request"]
    assert [line["request_id"] for line in lines] == [
        ok.headers["x-request-id"],
        bad.headers["x-request-id"],
    ]
    assert [(line["status"], line["model"], line["version"]) for line in lines] == [
        (200, "m", "2"),
        (400, "m", "2"),
    ]
    assert "error" not in lines[0]
    assert lines[1]["error"] == bad.json()["error"]


@pytest.mark.anyio
async def test_request_log_off_costs_no_log_call(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(**fields: Any) -> None:
        raise AssertionError("request log written while off")

    monkeypatch.setattr(service.http.observer, "log_request", fail)
    response = await served.client.post("/v2/models/m/infer", json=infer_doc([1], [1]))
    assert response.status_code == 200
