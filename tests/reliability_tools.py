"""Helpers of the end-to-end reliability tests: models of a chosen cost, raw HTTP, server probes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import random_params
from training.export import INPUT_NAMES, OUTPUT_NAME, export_onnx
from training.publish import PublishedVersion, publish_version

HEADER_LENGTH = "Inference-Header-Content-Length"
# A tower that makes a 1,024-row batch take tens of milliseconds: enough to fill a queue.
HEAVY_TOWER = (512, 512, 256)


def write_version(
    staging: Path, params: Mapping[str, np.ndarray], n_users: int, n_items: int
) -> None:
    """Write a version's files (model, vocabularies, metadata with checksum) into ``staging``."""
    export_onnx(params, "mlp", staging / "model.onnx")
    (staging / "users.txt").write_text("".join(f"u{i}\n" for i in range(n_users)))
    (staging / "items.txt").write_text("".join(f"i{i}\n" for i in range(n_items)))
    metadata = {
        "kind": "mlp",
        "inputs": [{"name": n, "datatype": "INT64", "shape": [-1]} for n in INPUT_NAMES],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}],
        "n_user_rows": n_users + 1,
        "n_item_rows": n_items + 1,
        "unknown_row": 0,
        "model_sha256": hashlib.sha256((staging / "model.onnx").read_bytes()).hexdigest(),
        "dataset": {"name": "random", "size": 0, "content_hash": ""},
    }
    (staging / "metadata.json").write_text(json.dumps(metadata))


def publish_model(
    repository: Path,
    name: str,
    *,
    n_users: int = 50,
    n_items: int = 40,
    seed: int = 0,
    dim: int = 8,
    tower: tuple[int, ...] = (16, 8),
) -> tuple[PublishedVersion, dict[str, np.ndarray]]:
    """Publish a random NCF-MLP version whose cost per row is set by ``dim`` and ``tower``."""
    params = random_params(n_users + 1, n_items + 1, dim=dim, tower=tower, seed=seed)
    published = publish_version(
        repository, name, lambda staging: write_version(staging, params, n_users, n_items)
    )
    return published, params


def write_config(repository: Path, name: str, config: Mapping[str, Any]) -> None:
    (repository / name).mkdir(parents=True, exist_ok=True)
    (repository / name / "config.json").write_text(json.dumps(config))


def infer_body(users: np.ndarray, items: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """A binary-tensor V2 request (as tritonclient sends it) and its headers."""
    n = users.shape[0]
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "shape": [n],
                    "datatype": "INT64",
                    "parameters": {"binary_data_size": 8 * n},
                }
                for name in INPUT_NAMES
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    body = header + users.astype(np.int64).tobytes() + items.astype(np.int64).tobytes()
    return body, {HEADER_LENGTH: str(len(header))}


def json_body(users: list[int], items: list[int]) -> bytes:
    n = len(users)
    return orjson.dumps(
        {
            "inputs": [
                {"name": "user", "shape": [n], "datatype": "INT64", "data": users},
                {"name": "item", "shape": [n], "datatype": "INT64", "data": items},
            ]
        }
    )


def binary_scores(content: bytes, headers: Mapping[str, str]) -> np.ndarray:
    length = int(headers[HEADER_LENGTH.lower()])
    return np.frombuffer(content[length:], dtype=np.float32)


def random_rows(n: int, n_users: int, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users + 1, n).astype(np.int64)
    items = rng.integers(0, n_items + 1, n).astype(np.int64)
    return users, items


def wait_until(
    predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting until {what}")
        time.sleep(interval_s)


def served_versions(url: str, model: str) -> list[int]:
    """Versions the server serves for ``model`` ([] while it serves none)."""
    response = httpx.get(f"{url}/v2/models/{model}", timeout=10)
    if response.status_code != 200:
        return []
    return [int(v) for v in response.json()["versions"]]


def repository_index(url: str, token: str) -> list[dict[str, str]]:
    response = httpx.post(
        f"{url}/v2/repository/index", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    entries: list[dict[str, str]] = response.json()
    return entries


def metric_value(url: str, name: str, labels: Mapping[str, str]) -> float:
    """A sample of the server's /metrics (0 when absent)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


def connect(port: int, timeout_s: float = 30.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout_s)


def request_head(
    method: str, path: str, headers: Mapping[str, str] | None = None, content_length: int | None = 0
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if content_length is not None:
        lines.append(f"Content-Length: {content_length}")
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_response(sock: socket.socket) -> RawResponse:
    """Read one HTTP/1.1 response with a Content-Length body (raises on a closed connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a response; got {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed in the middle of a response body")
        rest += chunk
    return RawResponse(int(status_line.split()[1]), headers, rest[:length])


class AsyncConnection:
    """One keep-alive HTTP/1.1 connection with as little client work as possible per request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> RawResponse:
        if self._writer is None or self._reader is None:
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writer.write(request_head(method, path, headers, len(body)) + body)
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        parsed = {}
        for line in header_lines:
            key, _, value = line.partition(":")
            parsed[key.strip().lower()] = value.strip()
        content = await self._reader.readexactly(int(parsed.get("content-length", "0")))
        if parsed.get("connection", "").lower() == "close":
            await self.close()
        return RawResponse(int(status_line.split()[1]), parsed, content)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None
