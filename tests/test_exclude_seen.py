"""``exclude_seen``: recommend never returns what the user already has, through the real server,
and training publishes the history of exactly what the published model was trained on."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelrepo import History, read_version
from tests.factories import publish_mlp_version, random_params, reference_scores
from tests.server_process import Servers
from training.data import SyntheticSpec, synthetic
from training.models import ModelConfig
from training.pipeline import PipelineConfig, run_pipeline
from training.split import leave_one_out
from training.train import TrainConfig

N_USERS, N_ITEMS = 12, 40
USER_IDS = [f"u{i}" for i in range(N_USERS)]
ITEM_IDS = [f"i{i}" for i in range(N_ITEMS)]
PARAMS = random_params(N_USERS + 1, N_ITEMS + 1, seed=11)
TOP_SEEN = 6  # each user has seen their 6 best items (and a few others): the model learned them
TINY = SyntheticSpec(users=60, items=150, interactions=1500, seed=4)
TINY_TRAIN = TrainConfig(epochs=2, batch_size=512)


def ordered(user_row: int, item_ids: list[str]) -> list[str]:
    """``item_ids`` for ``user_row``, best first, ties by id (an unknown id scores as row 0)."""
    rows = np.array([ITEM_IDS.index(i) + 1 if i in ITEM_IDS else 0 for i in item_ids])
    scores = reference_scores(PARAMS, np.full(rows.size, user_row), rows)
    order = sorted(range(rows.size), key=lambda i: (-scores[i], item_ids[i]))
    return [item_ids[i] for i in order]


def ranking(user_row: int) -> list[str]:
    """Every item for ``user_row``, best first: the whole-catalog ranking the server computes."""
    return ordered(user_row, ITEM_IDS)


def seen_ids(user_row: int) -> list[str]:
    """User ``user_row``'s history: their best items and every 7th item of the catalog."""
    best = ranking(user_row)[:TOP_SEEN]
    return sorted(set(best) | {ITEM_IDS[i] for i in range(user_row % 7, N_ITEMS, 7)})


def history() -> History:
    pairs = [
        (user_row, ITEM_IDS.index(item) + 1)
        for user_row in range(1, N_USERS + 1)
        for item in seen_ids(user_row)
    ]
    users, items = np.array(pairs).T
    return History.from_pairs(users, items, N_USERS + 1, N_ITEMS + 1)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, module_servers: Servers) -> Iterator[Any]:
    repository = tmp_path_factory.mktemp("repo")
    publish_mlp_version(repository, "seen", PARAMS, USER_IDS, ITEM_IDS, history=history())
    publish_mlp_version(repository, "plain", PARAMS, USER_IDS, ITEM_IDS)  # no history
    server = module_servers.start(repository, max_batch_rows=16)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def recommend(client: httpx.Client, model: str, **body: Any) -> list[str]:
    response = client.post(f"/v1/models/{model}/recommend", json=body)
    assert response.status_code == 200, response.text
    expected = {"model_name", "model_version", "user_id", "items", "unknown", "mode"}
    assert set(response.json()) == expected
    return [item["item_id"] for item in response.json()["items"]]


@pytest.mark.parametrize("user_row", range(1, N_USERS + 1))
def test_no_item_of_the_history_is_returned_from_the_catalog(
    client: httpx.Client, user_row: int
) -> None:
    user, seen = USER_IDS[user_row - 1], seen_ids(user_row)
    got = recommend(client, "seen", user_id=user, k=N_ITEMS)
    assert not set(got) & set(seen)
    assert got == [item for item in ranking(user_row) if item not in seen]  # the rest, in order
    top = recommend(client, "seen", user_id=user, k=5)
    assert top == got[:5]  # k items survive, k are returned
    assert recommend(client, "seen", user_id=user, k=5, exclude_seen=False) == ranking(user_row)[:5]


def test_exclude_seen_false_returns_the_history_again(client: httpx.Client) -> None:
    everything = recommend(client, "seen", user_id="u2", k=N_ITEMS, exclude_seen=False)
    assert everything == ranking(3)  # user u2 is row 3
    assert set(seen_ids(3)) <= set(everything)
    # The model ranks what the user has first: why it is left out by default.
    best = recommend(client, "seen", user_id="u2", k=TOP_SEEN, exclude_seen=False)
    assert best == ranking(3)[:TOP_SEEN] and set(best) <= set(seen_ids(3))


def test_candidates_are_filtered_too(client: httpx.Client) -> None:
    seen, unseen = seen_ids(5), [i for i in ITEM_IDS if i not in seen_ids(5)]
    candidates = [seen[0], unseen[0], "nope", seen[-1], unseen[3], unseen[1]]
    response = client.post(
        "/v1/models/seen/recommend", json={"user_id": "u4", "k": 10, "candidates": candidates}
    )
    assert response.status_code == 200
    got = [item["item_id"] for item in response.json()["items"]]
    assert got == ordered(5, [unseen[0], "nope", unseen[3], unseen[1]])
    assert response.json()["unknown"]["item_ids"] == ["nope"]  # still scored, never "seen"
    assert len(recommend(client, "seen", user_id="u4", k=2, candidates=candidates)) == 2
    off = recommend(client, "seen", user_id="u4", k=10, candidates=candidates, exclude_seen=False)
    assert off == ordered(5, candidates)
    only_seen = recommend(client, "seen", user_id="u4", k=10, candidates=seen[:3])
    assert only_seen == []


def test_the_callers_exclude_applies_on_top(client: httpx.Client) -> None:
    seen = seen_ids(1)
    rest = [item for item in ranking(1) if item not in seen]
    got = recommend(client, "seen", user_id="u0", k=4, exclude=[rest[0], rest[2], "unknown"])
    assert got == [rest[1], *rest[3:6]]
    off = recommend(client, "seen", user_id="u0", k=3, exclude=[ranking(1)[0]], exclude_seen=False)
    assert off == ranking(1)[1:4]


def test_an_unknown_user_has_no_history(client: httpx.Client) -> None:
    got = recommend(client, "seen", user_id="stranger", k=N_ITEMS)
    assert got == ranking(0)  # the unknown row, over the whole catalog
    assert got == recommend(client, "seen", user_id="stranger", k=N_ITEMS, exclude_seen=False)


def test_a_version_without_history_serves_as_before(client: httpx.Client) -> None:
    assert recommend(client, "plain", user_id="u2", k=TOP_SEEN) == ranking(3)[:TOP_SEEN]
    assert recommend(client, "plain", user_id="u2", k=N_ITEMS, exclude_seen=True) == ranking(3)


@pytest.mark.parametrize("value", ["yes", 1, None, [True]])
def test_exclude_seen_must_be_a_boolean(client: httpx.Client, value: Any) -> None:
    body = {"user_id": "u0", "exclude_seen": value}
    response = client.post("/v1/models/seen/recommend", json=body)
    assert response.status_code == 400
    assert "exclude_seen" in response.json()["error"]


def test_the_openapi_schema_documents_it(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    request = schema["paths"]["/v1/models/{model}/recommend"]["post"]["requestBody"]
    fields = request["content"]["application/json"]["schema"]["properties"]
    assert fields["exclude_seen"]["type"] == "boolean" and fields["exclude_seen"]["default"] is True


def pairs_of(stored_path: Path) -> set[tuple[str, str]]:
    """The published history as raw (user, item) id pairs, through the version's vocabularies."""
    stored = read_version(stored_path)
    assert stored.history is not None
    users, items = stored.vocabularies["users.txt"], stored.vocabularies["items.txt"]
    return {
        (users.id_of_row(row), items.id_of_row(int(item)))
        for row in range(1, stored.history.n_user_rows)
        for item in stored.history.items_of(row)
    }


@pytest.mark.parametrize("refit", [True, False])
def test_training_publishes_what_the_published_model_trained_on(
    tmp_path: Path, refit: bool
) -> None:
    config = PipelineConfig(
        data="synthetic",
        model_name="demo",
        repository=tmp_path,
        synthetic=TINY,
        model=ModelConfig(kind="mlp", embedding_dim=4, tower=(8,)),
        train=TINY_TRAIN,
        quiet=True,
        refit=refit,
    )
    result = run_pipeline(config, log=io.StringIO())
    data = synthetic(TINY)
    every = {
        (data.user_ids[u], data.item_ids[i])
        for u, i in zip(data.users.tolist(), data.items.tolist(), strict=True)
    }
    held_out = set()
    if not refit:  # --no-refit publishes the evaluated model: its hold-outs are not history
        split = leave_one_out(data, seed=TINY_TRAIN.seed)
        for candidates in (split.validation, split.test):
            for user, item in zip(candidates.users, candidates.items[:, 0], strict=True):
                held_out.add((data.user_ids[user], data.item_ids[item]))
        assert held_out and held_out <= every
    published = pairs_of(result.published.path)
    assert published == every - held_out
    records = result.manifest.records()["published_model"]
    assert len(published) == records["interactions"]
