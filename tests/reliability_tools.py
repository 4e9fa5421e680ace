"""Helpers of the end-to-end reliability tests: models of a chosen cost, request bodies, server
probes (served versions, the repository index, metrics)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import publish_random_version
from tests.server_process import ServerProcess, Servers

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAMES = ("user", "item")
# A tower that makes a 1,024-row batch take tens of milliseconds: enough to fill a queue.
HEAVY_TOWER = (512, 512, 256)
Params = dict[str, np.ndarray]


def publish_heavy(
    repository: Path, name: str = "heavy", tower: tuple[int, ...] = HEAVY_TOWER
) -> Params:
    """Publish a version (50 users, 40 items) whose wide tower makes every batch cost; its
    parameters, for the expected scores."""
    return publish_random_version(repository, name, dim=32, tower=tower)[1]


def start_heavy(servers: Servers, repository: Path, **options: Any) -> tuple[ServerProcess, Params]:
    """A server of model ``heavy`` (:func:`publish_heavy`) under load tests: ONNX Runtime on one
    thread leaves a core to the event loop and to the clients; the repository is not polled."""
    params = publish_heavy(repository)
    options = {"poll_interval_s": 0, "ort_intra_op_threads": 1, **options}
    return servers.start(repository, **options), params


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


def score_body(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, bytes]:
    """A ``/v1 score`` request for the rows' first user and their items, made known ids (rows
    from 1): the rows it scores and its body."""
    users = np.full_like(users, max(int(users[0]), 1))
    items = np.maximum(items, 1)
    body = orjson.dumps(
        {"user_id": f"u{users[0] - 1}", "item_ids": [f"i{row - 1}" for row in items.tolist()]}
    )
    return users, items, body


def binary_scores(content: bytes, headers: Mapping[str, str]) -> np.ndarray:
    return binary_reply(content, headers)[1]


def binary_reply(content: bytes, headers: Mapping[str, str]) -> tuple[dict[str, Any], np.ndarray]:
    """The JSON header of a binary-tensor V2 reply, and its scores."""
    length = int(headers[HEADER_LENGTH.lower()])
    return orjson.loads(content[:length]), np.frombuffer(content[length:], dtype=np.float32)


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
