"""``recserve train --kind dlrm --history-items K`` end to end, on planted sequences: each user
moves from one series of items to another, so what they did lately, not who they are, tells what
comes next. The run ranks the held-out users (never trained on) far above popularity from the
items they send; the version ships every user's latest items; the server fills them in for a
known user and takes a caller's own for an unknown one, both equal to a brute-force ranking under
ONNX Runtime; a bag too long is refused naming the field, an item the version does not know is
counted and left out."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from modelrepo import USER_FEATURES_FILE, StoredVersion, read_version
from modelrepo.layout import ITEMS_FILE
from tests.reliability_tools import metric_value
from tests.server_process import ServerProcess, Servers
from training.cli import main
from training.exits import EXIT_OK

NAME = "seq"
N_USERS, SERIES, PER_SERIES, PER_USER, K = 150, 12, 10, 8, 4


@dataclass
class Trained:
    repository: Path
    stored: StoredVersion
    series: dict[str, int]  # item id -> its series
    latest: dict[str, list[str]]  # user id -> items, oldest first


def write_sequences(path: Path, seed: int = 0) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Each user: ``PER_USER`` items of one series, then ``PER_USER`` of another, in time order."""
    rng = np.random.default_rng(seed)
    lines = ["user_id,item_id,timestamp"]
    history: dict[str, list[str]] = {}
    for user in range(N_USERS):
        first, second = rng.choice(SERIES, 2, replace=False)
        items = [
            f"i{series * PER_SERIES + at}"
            for series in (first, second)
            for at in rng.choice(PER_SERIES, PER_USER, replace=False)
        ]
        history[f"u{user}"] = items
        lines += [f"u{user},{item},{1_000_000 + 100 * user + t}" for t, item in enumerate(items)]
    path.write_text("\n".join(lines) + "\n")
    series = {f"i{i}": i // PER_SERIES for i in range(SERIES * PER_SERIES)}
    return series, history


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    root = tmp_path_factory.mktemp("history")
    data = root / "interactions.csv"
    series, history = write_sequences(data)
    repository = root / "repo"
    argv = [
        "--data", str(data), "--model", NAME, "--repository", str(repository), "--kind", "dlrm",
        "--history-items", str(K), "--embedding-dim", "16", "--tower", "16", "--id-dropout", "0",
        "--l2", "0", "--epochs", "8", "--lr", "0.01", "--lr-decay", "1", "--patience", "8",
        "--cold-start-users", "0.2", "--retrieval", "none", "--quiet",
    ]  # fmt: skip
    assert main(argv) == EXIT_OK
    return Trained(repository, read_version(repository / NAME / "1"), series, history)


def test_held_out_users_are_ranked_from_the_items_they_did_lately(trained: Trained) -> None:
    cold = trained.stored.manifest.records()["cold_start"]
    assert cold["users_evaluated"] == 30
    assert cold["model"]["hr@10"] >= cold["popularity"]["hr@10"] + 0.3, cold


def test_the_version_ships_each_users_latest_items(trained: Trained) -> None:
    stored = trained.stored
    spec = stored.manifest.signature.input("user_recent_items")
    assert spec.vocabulary == ITEMS_FILE and spec.shape == (-1, K) and spec.caller == "may"
    features = stored.manifest.records()["features"]["inputs"]
    assert {"input": "user_recent_items", "feature": "recent_items", "source": "user_table",
            "role": "multi_hot", "caller": "may"} in features  # fmt: skip
    table = stored.tables[USER_FEATURES_FILE]["user_recent_items"]
    users, items = stored.vocabularies["users.txt"], stored.vocabularies[ITEMS_FILE]
    assert not table[0].any()
    for user in users.ids_of_rows(np.arange(1, users.n_rows)):
        # The refit trained on every interaction: the latest K of them, latest first.
        expected = [items.row(item) for item in trained.latest[user][::-1][:K]]
        assert table[users.row(user)].tolist() == expected, user


@pytest.fixture(scope="module")
def server(module_servers: Servers, trained: Trained) -> ServerProcess:
    return module_servers.start(trained.repository, poll_interval_s=0, forbidden=("Traceback",))


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def brute_force(stored: StoredVersion, user_row: int, bag: list[int], k: int) -> list[str]:
    items = stored.vocabularies[ITEMS_FILE]
    rows = np.arange(1, items.n_rows, dtype=np.int64)
    padded = np.zeros(K, dtype=np.int64)
    padded[: len(bag)] = bag
    feeds = {
        "user": np.full(rows.size, user_row, dtype=np.int64),
        "item": rows,
        "user_recent_items": np.repeat(padded[None], rows.size, axis=0),
    }
    session = ort.InferenceSession(stored.model, providers=["CPUExecutionProvider"])
    (scores,) = session.run(["score"], feeds)
    ids = items.ids_of_rows(rows)
    order = sorted(range(rows.size), key=lambda i: (-float(scores[i]), ids[i]))
    return [ids[i] for i in order[:k]]


def recommend(client: httpx.Client, body: dict[str, Any]) -> httpx.Response:
    return client.post(f"/v1/models/{NAME}/recommend", content=json.dumps(body))


def test_a_known_user_is_ranked_with_their_latest_items(
    trained: Trained, client: httpx.Client
) -> None:
    stored = trained.stored
    users = stored.vocabularies["users.txt"]
    table = stored.tables[USER_FEATURES_FILE]["user_recent_items"]
    for user in users.ids_of_rows(np.array([1, 7])):
        row = users.row(user)
        answer = recommend(client, {"user_id": user, "k": 10, "exclude_seen": False})
        assert answer.status_code == 200, answer.text
        got = [item["item_id"] for item in answer.json()["items"]]
        assert got == brute_force(stored, row, [r for r in table[row].tolist() if r], 10)


def test_an_unknown_user_is_ranked_from_the_items_they_send(
    trained: Trained, client: httpx.Client, server: ServerProcess
) -> None:
    stored = trained.stored
    items = stored.vocabularies[ITEMS_FILE]
    plain = recommend(client, {"user_id": "nobody", "k": 10}).json()["items"]
    labels = {"model": NAME, "kind": "user_features:recent_items"}
    before = metric_value(server.url, "recserve_unknown_ids_total", labels)
    for series in (2, 9):
        sent = [f"i{series * PER_SERIES + at}" for at in (0, 3, 5)]
        body = {"user_id": "nobody", "k": 10, "user_features": {"recent_items": [*sent, "i9999"]}}
        answer = recommend(client, body)
        assert answer.status_code == 200, answer.text
        got = [item["item_id"] for item in answer.json()["items"]]
        assert got == brute_force(stored, 0, [items.row(item) for item in sent], 10)
        assert got != [item["item_id"] for item in plain]
        # The planted effect: what comes next is mostly the rest of the series they are in.
        assert sum(trained.series[item] == series for item in got) >= 5, (series, got)
    after = metric_value(server.url, "recserve_unknown_ids_total", labels)
    assert after - before == 2  # "i9999", once per request


def test_a_bag_longer_than_the_model_takes_is_refused_naming_it(client: httpx.Client) -> None:
    sent = [f"i{at}" for at in range(K + 1)]  # distinct: a bag counts an item once
    body = {"user_id": "nobody", "user_features": {"recent_items": sent}}
    answer = recommend(client, body)
    assert answer.status_code == 400
    assert "user_features.recent_items" in answer.json()["error"]
