"""Request ids and the JSON request log line."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from service.http.request_log import log_request, new_request_id, request_id


def test_new_ids_are_32_hex_digits_and_distinct() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert all(re.fullmatch(rb"[0-9a-f]{32}", rid) for rid in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_draws_a_new_prefix() -> None:
    # In a fresh interpreter: forking this multi-threaded test process would be unsafe.
    script = """
import os
from service.http.request_log import new_request_id
parent = new_request_id()
pid = os.fork()
if pid == 0:
    print(new_request_id().decode(), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
print(parent.decode())
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    child, parent = result.stdout.split()
    assert child[:16] != parent[:16]


def test_the_callers_usable_id_is_kept() -> None:
    headers = [(b"host", b"x"), (b"x-request-id", b"trace-42/abc")]
    assert request_id(headers) == b"trace-42/abc"


@pytest.mark.parametrize(
    "value", [b"", b"has space", b"x" * 129, b"caf\xc3\xa9", b"tab\there"], ids=repr
)
def test_an_unusable_id_is_replaced(value: bytes) -> None:
    replaced = request_id([(b"x-request-id", value)])
    assert replaced != value
    assert re.fullmatch(rb"[0-9a-f]{32}", replaced)


def test_without_the_header_an_id_is_made() -> None:
    assert re.fullmatch(rb"[0-9a-f]{32}", request_id([(b"host", b"x")]))


LINE = {
    "request_id": b"abc",
    "method": "POST",
    "path": "/v1/models/m/score",
    "endpoint": "score",
    "model": "m",
    "version": "3",
    "status": 400,
    "seconds": 0.0012345,
    "error": "invalid request: k: too large",
}


def test_log_line_is_one_json_object(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="recserve.request")
    log_request(**LINE)  # type: ignore[arg-type]
    (record,) = caplog.records
    assert record.name == "recserve.request"
    assert "\n" not in record.getMessage()
    line = orjson.loads(record.getMessage())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line.pop("ts"))
    assert line == {
        "request_id": "abc",
        "method": "POST",
        "path": "/v1/models/m/score",
        "endpoint": "score",
        "model": "m",
        "version": "3",
        "status": 400,
        "duration_ms": 1.234,
        "pid": os.getpid(),
        "error": "invalid request: k: too large",
    }


def test_log_line_without_error_has_no_error_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="recserve.request")
    log_request(**{**LINE, "status": 200, "error": None})  # type: ignore[arg-type]
    line = orjson.loads(caplog.records[0].getMessage())
    assert "error" not in line and line["status"] == 200
