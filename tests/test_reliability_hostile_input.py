"""Hostile input, end to end over raw sockets: every malformed, oversized or malicious request is
refused with a bounded 4xx and a message, and nothing outside the model repository is ever read.
"""

from __future__ import annotations

import gzip
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.factories import publish_random_version
from tests.raw_http import RawResponse, connect, read_response, request_head
from tests.reliability_tools import repository_index
from tests.server_process import ServerProcess, Servers

TOKEN = "hostile-token"
MAX_BODY = 64 * 1024
INFER = "/v2/models/recs/infer"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Setup:
    server: ServerProcess
    repository: Path
    outside: Path  # beside the repository: a valid model and a secret no request may reach


@pytest.fixture(scope="module")
def setup(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("hostile")
    publish_random_version(root / "repo", "recs", seed=1)
    publish_random_version(root / "outside", "evil", seed=2)
    (root / "outside" / "secret.txt").write_text("secret\n")
    for path in (root / "outside").rglob("*"):  # access canaries: any read moves the atime
        stat = path.stat()
        os.utime(path, ns=(stat.st_mtime_ns - 3600 * 10**9, stat.st_mtime_ns))
    server = module_servers.start(
        root / "repo",
        poll_interval_s=0,
        max_request_bytes=MAX_BODY,
        env={"RECSERVE_ADMIN_TOKEN": TOKEN},
        forbidden=("Traceback",),
    )
    return Setup(server, root / "repo", root / "outside")


def send(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> RawResponse:
    """One request, its path sent exactly as written (no client-side normalisation)."""
    sock = connect(server.port)
    try:
        sock.sendall(request_head(method, path, headers, len(body)) + body)
        return read_response(sock)
    finally:
        sock.close()


def _tensor(name: str, datatype: str, shape: list[int], data: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def _infer(*inputs: dict[str, Any]) -> bytes:
    return orjson.dumps({"inputs": list(inputs)})


def _binary(inputs: list[dict[str, Any]], tail: bytes) -> tuple[bytes, dict[str, str]]:
    """A binary-extension body: JSON header, then ``tail`` as the tensors' bytes."""
    header = orjson.dumps({"inputs": inputs})
    return header + tail, {"Inference-Header-Content-Length": str(len(header))}


def _binary_input(name: str, shape: list[int], size: int) -> dict[str, Any]:
    return {
        "name": name,
        "datatype": "INT64",
        "shape": shape,
        "parameters": {"binary_data_size": size},
    }


USER = _tensor("user", "INT64", [2], [1, 2])
ITEM = _tensor("item", "INT64", [2], [3, 4])
NESTED = 20_000
BYTES_TENSOR = (  # a third input, a string tensor with a truncated UTF-8 sequence
    _infer(USER, ITEM)[:-2] + b',{"name":"s","datatype":"BYTES","shape":[1],"data":["\xc3("]}]}'
)

# JSON bodies: (the user tensor, the item tensor, a phrase the 400 message must hold)
BAD_TENSORS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "wrong dtype": (_tensor("user", "FP32", [2], [1.5, 2.5]), ITEM, "expected INT64"),
    "floats sent as INT64": (
        _tensor("user", "INT64", [2], [1.5, 2.5]),
        ITEM,
        "does not match datatype INT64",
    ),
    "wrong shape": (_tensor("user", "INT64", [1, 2], [[1, 2]]), ITEM, "shape [1, 2]"),
    "shape and data disagree": (_tensor("user", "INT64", [3], [1, 2]), ITEM, "holds 3 elements"),
    "unknown datatype string": (
        _tensor("user", "INT65", [2], [1, 2]),
        ITEM,
        "unsupported datatype",
    ),
    "rows differ between inputs": (
        USER,
        _tensor("item", "INT64", [3], [1, 2, 3]),
        "same number of rows",
    ),
    # The value as sent, never the table's size; a UINT64 not as the -1 it wraps to in int64.
    "row out of range": (
        USER,
        _tensor("item", "INT64", [2], [3, 10**6]),
        "input 'item' value 1000000 at index 1 is out of range for model 'recs' version 1",
    ),
    "UINT64 past int64": (
        USER,
        _tensor("item", "UINT64", [2], [3, 18446744073709551615]),
        "input 'item' value 18446744073709551615 at index 1 is out of range for model 'recs' "
        "version 1",
    ),
}

# (request body, extra headers, a phrase the 400 message must hold)
BAD_INFER: dict[str, tuple[bytes, dict[str, str], str]] = {
    **{
        case: (_infer(user, item), {}, phrase) for case, (user, item, phrase) in BAD_TENSORS.items()
    },
    "missing input": (_infer(USER), {}, "missing ['item']"),
    "binary size wrong for the shape": (
        *_binary([_binary_input("user", [2], 7), ITEM], b"\x00" * 7),
        "binary_data_size is 7 bytes",
    ),
    "binary data shorter than declared": (
        *_binary([_binary_input("user", [4], 32), _binary_input("item", [4], 32)], b"\x01" * 40),
        "run past the end of the body",
    ),
    "binary data longer than declared": (
        *_binary([_binary_input("user", [2], 16), ITEM], b"\x01" * 24),
        "add up to 16",
    ),
    "header length past the body": (
        _infer(USER, ITEM),
        {"Inference-Header-Content-Length": "999999"},
        "Inference-Header-Content-Length",
    ),
    "bad gzip": (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, "gzip"),
    "truncated gzip": (
        gzip.compress(_infer(USER, ITEM))[:-12],
        {"Content-Encoding": "gzip"},
        "truncated",
    ),
    "huge shape": (
        *_binary([_binary_input("user", [2**62, 2**62], 16), ITEM], b"\x00" * 16),
        "needs",
    ),
    "deeply nested data": (
        b'{"inputs": [{"name": "user", "datatype": "INT64", "shape": [1], "data": '
        + b"[" * NESTED
        + b"1"
        + b"]" * NESTED
        + b"}]}",
        {},
        "not valid JSON",
    ),
    "not JSON at all": (b"{\x00garbage", {}, "not valid JSON"),
    "not UTF-8": (b"\xff\xfe\x00garbage", {}, "request body is not valid UTF-8 at byte 0"),
    "invalid UTF-8 in a BYTES tensor": (
        BYTES_TENSOR,
        {},
        f"request body is not valid UTF-8 at byte {BYTES_TENSOR.index(bytes([0xC3]))}",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INFER))
def test_malformed_inference_requests_are_400_with_a_message(setup: Setup, case: str) -> None:
    body, headers, phrase = BAD_INFER[case]
    reply = send(setup.server, "POST", INFER, body, headers)
    assert reply.status == 400, reply.body
    assert phrase in reply.json()["error"]


def test_a_recommendation_body_that_is_not_utf8_names_the_byte(setup: Setup) -> None:
    body = b'{"user_id": "u\xff1", "item_ids": ["i1"]}'
    reply = send(setup.server, "POST", "/v1/models/recs/score", body)
    assert reply.status == 400, reply.body
    assert reply.json() == {"error": "invalid request: body: not valid UTF-8 at byte 14"}


@pytest.mark.parametrize(
    ("path", "body", "phrase"),
    [
        ("recommend", {"user_id": "u1", "k": 10**9}, "k:"),
        ("recommend", {"user_id": "u1", "k": 10**30}, "k:"),
        ("recommend", {"user_id": "u1", "candidates": [f"i{i}" for i in range(10_001)]}, "413"),
        ("recommend", {"user_id": "u1", "candidates": ["i1"] * 10_001}, "candidates"),
        ("score", {"user_id": "u1", "item_ids": []}, "item_ids"),
        ("score", {"user_id": "u1", "item_ids": ["x" * 257]}, "item_ids"),
        ("score", {"user_id": ["u1"], "item_ids": ["i1"]}, "user_id"),
        ("score", {"user_id": "u1", "item_ids": ["i1"], "extra": 1}, "extra"),
    ],
)
def test_recommendation_api_limits_are_bounded_4xx(
    setup: Setup, path: str, body: dict[str, Any], phrase: str
) -> None:
    encoded = json.dumps(body).encode()  # (orjson refuses integers beyond 64 bits)
    reply = send(setup.server, "POST", f"/v1/models/recs/{path}", encoded)
    if phrase == "413":
        assert len(encoded) > MAX_BODY
        assert reply.status == 413, reply.body
    else:
        assert len(encoded) <= MAX_BODY
        assert reply.status == 400, reply.body
        assert phrase in reply.json()["error"]


def test_deeply_nested_json_is_400(setup: Setup) -> None:
    nested = b"[" * NESTED + b"]" * NESTED
    for path in ("/v1/models/recs/score", "/v2/repository/index"):
        reply = send(setup.server, "POST", path, b'{"user_id": ' + nested + b"}", ADMIN)
        assert reply.status == 400, reply.body
        assert reply.json()["error"]


@pytest.mark.parametrize(
    "path", [INFER, "/v1/models/recs/score", "/v2/repository/models/recs/load"]
)
def test_body_over_the_limit_is_413_before_it_is_sent(setup: Setup, path: str) -> None:
    """The answer comes while the client has sent none of the 100 MB it announced."""
    sock = connect(setup.server.port)
    try:
        sock.sendall(request_head("POST", path, ADMIN, 100_000_000))
        reply = read_response(sock)
    finally:
        sock.close()
    assert reply.status == 413
    assert "limit" in reply.json()["error"]


@pytest.mark.parametrize("path", [INFER, "/v1/models/recs/score"])
def test_chunked_body_over_the_limit_is_413_before_it_ends(setup: Setup, path: str) -> None:
    """Without a Content-Length: refused once the limit is passed, before the body ends."""
    sock = connect(setup.server.port)
    try:
        sock.sendall(request_head("POST", path, {"Transfer-Encoding": "chunked"}, None))
        chunk = b" " * 4096
        for _ in range(MAX_BODY // len(chunk) + 2):
            sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        reply = read_response(sock)  # the final zero-length chunk was never sent
    finally:
        sock.close()
    assert reply.status == 413


# Paths that try to leave the repository: encoded separators, dot segments, absolute paths, NUL.
PATH_TRICKS = [
    "/v2/models/..%2Foutside%2Fevil/ready",
    "/v2/models/..%2F..%2Foutside%2Fevil/versions/1/ready",
    "/v2/models/%2e%2e/ready",
    "/v2/models/%2E%2E%2Foutside/config",
    "/v2/models/../outside/evil/ready",
    "/v2/models/%2Ftmp%2Fevil/ready",
    "/v2/models/evil%00/ready",
    "/v2/models/recs%00..%2F..%2Fetc/ready",
    "/v2/models/recs/versions/..%2F..%2F1/ready",
    "/v2/models/recs/versions/%2e%2e/config",
    "/v2/models/recs/versions/1%00/stats",
    "/v2/models/..%2Foutside%2Fevil/infer",
    "/v1/models/..%2Foutside%2Fevil/score",
    "/v1/models/recs/versions/%2e%2e/recommend",
    "/v2/repository/models/..%2Foutside%2Fevil/load",
    "/v2/repository/models/%2e%2e/load",
    "/v2/repository/models/%2Ftmp/unload",
    "/v2/models/evil/ready",  # a valid name, but not one in the repository
    "/v2/repository/models/evil/load",
]


def test_path_tricks_never_leave_the_repository(setup: Setup) -> None:
    before = {path: path.stat().st_atime_ns for path in setup.outside.rglob("*")}
    for path in PATH_TRICKS:
        method = "GET" if path.endswith(("ready", "config", "stats")) else "POST"
        body = b'{"user_id": "u1", "item_ids": ["i1"]}' if path.startswith("/v1/") else b""
        reply = send(setup.server, method, path, body, ADMIN)
        assert reply.status in (400, 404), (path, reply.status, reply.body)
        assert reply.json()["error"]
    names = {entry["name"] for entry in repository_index(setup.server.url, TOKEN)}
    assert names == {"recs"}
    log = setup.server.log()
    assert "evil" not in log and "outside" not in log
    # relatime updates an atime older than the mtime on any read: the canaries show no reads.
    probe = setup.outside / "secret.txt"
    probe_copy = probe.with_name("probe.txt")
    probe_copy.write_text("probe\n")
    stat = probe_copy.stat()
    os.utime(probe_copy, ns=(stat.st_mtime_ns - 3600 * 10**9, stat.st_mtime_ns))
    time.sleep(0.01)
    probe_copy.read_text()
    atime_works = probe_copy.stat().st_atime_ns > stat.st_mtime_ns - 3600 * 10**9
    probe_copy.unlink()
    if atime_works:
        after = {path: path.stat().st_atime_ns for path in before}
        assert after == before, "a file outside the repository was read"


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong", f"Basic {TOKEN}", f"bearer {TOKEN}x", TOKEN],
)
@pytest.mark.parametrize(
    "path",
    [
        "/v2/repository/index",
        "/v2/repository/models/recs/load",
        "/v2/repository/models/recs/unload",
    ],
)
def test_repository_api_without_the_admin_token_is_refused(
    setup: Setup, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    reply = send(setup.server, "POST", path, b"", headers)
    if authorization is None and path == "/v2/repository/index":
        assert reply.status == 200, reply.body  # the read-only index needs no credentials
        return
    if authorization is None:  # no credentials at all: 401, naming the scheme to use
        assert reply.status == 401, reply.body
        assert reply.headers["www-authenticate"].startswith("Bearer")
    else:
        assert reply.status == 403, reply.body
    assert "token" in reply.json()["error"]
    assert send(setup.server, "GET", "/v2/models/recs/ready").status == 200  # still loaded
