"""The request observer: request ids, error logging, request counting and timing, request log."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import numpy as np
import orjson
import pytest
from starlette.types import Message

import service.http.observer
from service.errors import InferenceFailed, InvalidInput, Overloaded
from tests.app_harness import Harness, infer_doc, serving

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
async def logged() -> AsyncIterator[Harness]:
    async with serving(request_log=True) as harness:
        yield harness


# -- request ids ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_every_answer_carries_a_request_id(served: Harness) -> None:
    served.version(1).fail_with = Overloaded("queue full")
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
async def test_the_callers_request_id_is_returned(served: Harness) -> None:
    response = await served.client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "answer"),
    [
        (RuntimeError("boom"), "internal server error"),  # no handler: the observer answers
        (InferenceFailed("ORT says no"), "ORT says no"),
    ],
)
async def test_server_faults_are_logged_with_traceback_and_answered_500(
    served: Harness, caplog: pytest.LogCaptureFixture, error: Exception, answer: str
) -> None:
    served.version(2).fail_with = error
    response = await served.client.post(
        "/v2/models/m/infer", json=infer_doc([1], [1]), headers={"X-Request-ID": "r-500"}
    )
    assert (response.status_code, response.json()) == (500, {"error": answer})
    assert response.headers["x-request-id"] == "r-500"
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "r-500" in record.getMessage() and answer in record.getMessage()
    assert record.exc_info is not None and record.exc_info[1] is error
    count = served.value(
        "recserve_requests_total", model="m", version="2", endpoint="infer", code="500"
    )
    assert count == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status"), [(InvalidInput("bad rows"), 400), (Overloaded("queue full"), 503)]
)
async def test_client_errors_and_refusals_are_logged_at_debug_with_their_message(
    served: Harness, caplog: pytest.LogCaptureFixture, error: Exception, status: int
) -> None:
    caplog.set_level(logging.DEBUG, logger="service")
    served.version(2).fail_with = error
    response = await served.client.post(
        "/v2/models/m/infer", json=infer_doc([1], [1]), headers={"X-Request-ID": "r-4xx"}
    )
    assert response.status_code == status
    records = [r for r in caplog.records if "r-4xx" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.DEBUG]
    assert str(error) in records[0].getMessage()
    assert records[0].exc_info is None


@pytest.mark.anyio
async def test_a_client_gone_before_its_body_is_counted_499(served: Harness) -> None:
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
async def test_duration_runs_from_the_headers_so_a_slow_upload_counts(served: Harness) -> None:
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
async def test_inflight_counts_requests_being_computed(served: Harness) -> None:
    release = asyncio.Event()
    started = asyncio.Event()
    version = served.version(2)
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
    logged: Harness, caplog: pytest.LogCaptureFixture
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
    served: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(**fields: Any) -> None:
        raise AssertionError("request log written while off")

    monkeypatch.setattr(service.http.observer, "log_request", fail)
    response = await served.client.post("/v2/models/m/infer", json=infer_doc([1], [1]))
    assert response.status_code == 200
