"""``filters`` on item attributes, through a real server: each filter keeps exactly the items a
brute-force check over the raw attributes keeps, before ranking (the survivors ranked as the model
ranks them, ``k`` of them when at least ``k`` survive); filters AND together and with
``candidates`` and ``exclude``; every bad filter is a 400 naming it and harms no request sent
beside it; a version without item attributes refuses any filter, naming the attribute.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from modelrepo import RetrievalVectors
from service.v1.filters import keep_mask
from service.v1.recommend import feeding_of
from service.v1.schemas import ItemFilter
from tests.factories import publish_mlp_version, random_params
from tests.feature_factories import BRANDS, GENRES, FeatureModel, publish_feature_model
from tests.model_tools import run, serving
from tests.reliability_tools import metric_value
from tests.server_process import ServerProcess, Servers

MODEL, PLAIN, STAGED = "attrs", "plain", "staged"
N_ITEMS = 60
# The retrieval vectors of the two-stage copy of the feature model (8 dimensions, random).
RETRIEVAL = RetrievalVectors(
    np.random.default_rng(11).normal(size=(13, 8)).astype(np.float32),
    np.random.default_rng(12).normal(size=(N_ITEMS + 1, 8)).astype(np.float32),
)
DEVICE = {"device": "tv"}


@dataclass
class Served:
    """One server for the module: the feature model with attributes, and a two-id model."""

    server: ServerProcess
    model: FeatureModel


@pytest.fixture(scope="module")
def setup(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Served:
    root = tmp_path_factory.mktemp("filters")
    model = publish_feature_model(root, MODEL, n_items=N_ITEMS, seed=8, attributes=True)
    params = random_params(4, 6, seed=2)
    publish_mlp_version(root, PLAIN, params, ["a", "b", "c"], ["x", "y", "z", "w", "v"])
    publish_feature_model(root, STAGED, n_items=N_ITEMS, seed=8, attributes=True,
                          retrieval=RETRIEVAL)  # fmt: skip
    # Requests wait up to 5 ms for others, so that the concurrent ones share batches; a traceback
    # in the server's log fails the module.
    batching = {"poll_interval_s": 0, "max_queue_delay_us": 5000}
    started = module_servers.start(root, forbidden=("Traceback",), **batching)
    return Served(started, model)


@pytest.fixture
def client(setup: Served) -> Iterator[httpx.Client]:
    http = httpx.Client(base_url=setup.server.url, timeout=30)
    yield http
    http.close()


def post(client: httpx.Client, body: dict[str, Any], model: str = MODEL) -> httpx.Response:
    # json.dumps, not httpx's encoder: it writes NaN and integers of any size.
    return client.post(f"/v1/models/{model}/recommend", content=json.dumps(body))


# -- the brute force: raw attributes, one item at a time ------------------------------------------


def attributes(model: FeatureModel, item_id: str) -> dict[str, Any]:
    """The raw attributes of one item; an item the version does not know has none."""
    row = model.items.row(item_id)
    if row == 0:
        return {"genres": set(), "brand": set(), "year": None}
    assert model.years is not None
    bag = model.item_table["item_genres"][row]
    return {
        "genres": {GENRES[g - 1] for g in bag.tolist() if g},
        "brand": {BRANDS[int(model.item_table["item_brand"][row]) - 1]},
        "year": int(model.years[row]),
    }


def passes(values: dict[str, Any], item_filter: dict[str, Any]) -> bool:
    held = values[item_filter["feature"]]
    if "any_of" in item_filter and not held & {str(v) for v in item_filter["any_of"]}:
        return False
    if "none_of" in item_filter and held & {str(v) for v in item_filter["none_of"]}:
        return False
    low, high = item_filter.get("min", -np.inf), item_filter.get("max", np.inf)
    if "min" in item_filter or "max" in item_filter:
        return held is not None and low <= held <= high
    return True


def survivors(model: FeatureModel, ids: list[str], filters: list[dict[str, Any]]) -> list[str]:
    return [i for i in ids if all(passes(attributes(model, i), f) for f in filters)]


def best(model: FeatureModel, user: str, ids: list[str], k: int) -> tuple[list[str], np.ndarray]:
    """The best ``k`` of ``ids`` for ``user``, scored by the NumPy twin of the model."""
    rows = np.array([model.items.row(i) for i in ids])
    scores = model.scores(model.users.row(user), rows, device=DEVICE["device"])
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
    return [ids[i] for i in order], scores[order]


def check(answer: httpx.Response, expected: tuple[list[str], np.ndarray]) -> None:
    assert answer.status_code == 200, answer.text
    items = answer.json()["items"]
    assert [item["item_id"] for item in items] == expected[0]
    got = [item["score"] for item in items]
    np.testing.assert_allclose(got, expected[1], rtol=1e-5, atol=1e-5)


def catalog(model: FeatureModel) -> list[str]:
    return list(model.items.ids)


# -- each kind of filter, and together ---------------------------------------------------------


def test_two_stage_asks_the_index_for_more_until_k_items_survive_the_filters(
    setup: Served, client: httpx.Client
) -> None:
    """A filter keeping about a quarter of the catalog, with ``retrieve_n`` = ``k``: the first
    ``k`` retrieved items rarely all pass, so the index is asked again; what is ranked is the
    first ``retrieve_n`` survivors in retrieval order, exactly."""
    model, brand = setup.model, {"feature": "brand", "any_of": ["acme"]}
    for user in ("u1", "u7", "nobody"):
        row = model.users.row(user)  # the unknown user retrieves with row 0's vector
        order = np.argsort(-(RETRIEVAL.item_vectors[1:] @ RETRIEVAL.user_vectors[row]))
        retrieved = [model.items.ids[i] for i in order]
        wanted = survivors(model, retrieved, [brand])[:5]
        assert len(wanted) == 5
        body = {"user_id": user, "k": 5, "mode": "two_stage", "retrieve_n": 5,
                "filters": [brand], "context": DEVICE, "exclude_seen": False}  # fmt: skip
        answer = post(client, body, STAGED)
        assert answer.json()["mode"] == "two_stage"
        check(answer, best(model, user, wanted, 5))


KINDS: list[dict[str, Any]] = [
    {"feature": "genres", "any_of": ["comedy", "drama"]},
    {"feature": "genres", "none_of": ["action"]},
    {"feature": "genres", "any_of": ["noir", "western"], "none_of": ["horror"]},
    {"feature": "genres", "any_of": ["comedy", "zither"]},  # "zither": matches nothing
    {"feature": "brand", "any_of": ["acme"]},
    {"feature": "brand", "none_of": ["globex", "initech"]},
    {"feature": "year", "min": 1990, "max": 1999},  # inclusive: items at 1990 and 1999 stay
    {"feature": "year", "min": 2001.5},
    {"feature": "year", "max": 1975},
    {"feature": "year", "min": 1990, "max": 1990},
]


@pytest.mark.parametrize("item_filter", KINDS, ids=lambda f: json.dumps(f))
def test_each_filter_keeps_what_the_brute_force_keeps(
    setup: Served, client: httpx.Client, item_filter: dict[str, Any]
) -> None:
    model = setup.model
    kept = survivors(model, catalog(model), [item_filter])
    assert 0 < len(kept) < N_ITEMS  # the filter matters, and leaves something
    body = {"user_id": "u2", "k": N_ITEMS, "context": DEVICE, "filters": [item_filter]}
    check(post(client, body), best(model, "u2", kept, N_ITEMS))
    # k honoured: the best 4 survivors, not 4 of the catalog filtered afterwards.
    check(post(client, {**body, "k": 4}), best(model, "u2", kept, 4))


def test_the_bounds_of_a_range_are_inclusive(setup: Served, client: httpx.Client) -> None:
    assert setup.model.years is not None
    year = int(setup.model.years[7])  # item i7's year, as both bounds
    kept = survivors(setup.model, catalog(setup.model), [{"feature": "year", "min": year}])
    body = {"user_id": "u1", "k": N_ITEMS, "context": DEVICE}
    exact = {**body, "filters": [{"feature": "year", "min": year, "max": year}]}
    got = [item["item_id"] for item in post(client, exact).json()["items"]]
    assert "i7" in got and all(setup.model.years[int(i[1:])] == year for i in got)
    at_least = {**body, "filters": [{"feature": "year", "min": year}]}
    assert sorted(item["item_id"] for item in post(client, at_least).json()["items"]) == sorted(
        kept
    )


def test_filters_and_together_with_candidates_and_exclude(
    setup: Served, client: httpx.Client
) -> None:
    model = setup.model
    filters = [
        {"feature": "genres", "none_of": ["horror"]},
        {"feature": "year", "min": 1980},
        {"feature": "brand", "any_of": ["acme", "globex", "umbrella"]},
    ]
    kept = survivors(model, catalog(model), filters)
    assert len(kept) < min(len(survivors(model, catalog(model), [f])) for f in filters)
    body = {"user_id": "u5", "k": 5, "context": DEVICE, "filters": filters}
    check(post(client, body), best(model, "u5", kept, 5))
    # ``exclude`` on top: the best survivors left.
    excluded = best(model, "u5", kept, 2)[0]
    rest = [i for i in kept if i not in excluded]
    check(post(client, {**body, "exclude": excluded}), best(model, "u5", rest, 5))
    # On candidates: only those that pass are ranked; an unknown one has no attributes.
    candidates = [f"i{r}" for r in range(1, N_ITEMS + 1, 3)] + ["nope"]
    on_candidates = {**body, "k": N_ITEMS, "candidates": candidates}
    expected = best(model, "u5", survivors(model, candidates, filters), N_ITEMS)
    check(post(client, on_candidates), expected)
    drop_only = {**on_candidates, "filters": [{"feature": "genres", "none_of": ["horror"]}]}
    assert "nope" in [item["item_id"] for item in post(client, drop_only).json()["items"]]


def test_fewer_survivors_than_k_are_all_returned(setup: Served, client: httpx.Client) -> None:
    model = setup.model
    filters = [{"feature": "year", "max": 1972}, {"feature": "brand", "any_of": ["umbrella"]}]
    kept = survivors(model, catalog(model), filters)
    assert 0 < len(kept) < 10
    check(
        post(client, {"user_id": "u3", "context": DEVICE, "filters": filters}),
        best(model, "u3", kept, 10),
    )


def test_integer_values_are_read_as_their_decimal_strings(
    setup: Served, client: httpx.Client
) -> None:
    # No brand is called "7": a value the vocabulary does not hold matches nothing.
    filters = [{"feature": "brand", "none_of": [7, "acme"]}]
    kept = survivors(setup.model, catalog(setup.model), filters)
    assert kept == survivors(
        setup.model, catalog(setup.model), [{**filters[0], "none_of": ["acme"]}]
    )
    body = {"user_id": "u3", "k": N_ITEMS, "context": DEVICE, "filters": filters}
    check(post(client, body), best(setup.model, "u3", kept, N_ITEMS))


# -- refusals ------------------------------------------------------------------------------------

GOOD: dict[str, Any] = {"user_id": "u3", "k": 5, "context": DEVICE}
YEAR = {"feature": "year", "min": 1990}
# (the filters sent, the start of the refusal after "invalid request: "): each names its filter.
BAD: list[tuple[Any, str]] = [
    ([{"feature": "color", "any_of": ["red"]}], "filters.0: model 'attrs' version 1 has no item "
     "attribute 'color' (it has ['brand', 'genres', 'year'])"),
    ([YEAR, {"feature": "occupation", "any_of": ["doctor"]}], "filters.1: model 'attrs' version "
     "1 has no item attribute 'occupation'"),  # a user feature is no item attribute
    ([{"feature": "year", "any_of": ["1990"]}], "filters.0: 'year' is numeric: it takes 'min'"),
    ([{"feature": "genres", "min": 1}], "filters.0: 'genres' is multi-hot: it takes 'any_of'"),
    ([{"feature": "brand", "max": 3}], "filters.0: 'brand' is categorical: it takes 'any_of'"),
    ([{"feature": "genres", "any_of": []}], "filters.0.any_of: List should have at least 1 item"),
    ([{"feature": "genres", "none_of": []}], "filters.0.none_of: List should have at least 1"),
    ([{"feature": "year", "min": 2000, "max": 1990}], "filters.0: Value error, the filter on "
     "'year': 'min' 2000 is above 'max' 1990"),
    ([{"feature": "genres"}], "filters.0: Value error, the filter on 'genres' takes 'any_of'"),
    ([{"feature": "year", "min": 1, "any_of": ["x"]}], "filters.0: Value error, the filter on"),
    ([{"feature": "genres", "any_of": ["comedy", True]}], "filters.0.any_of.1: Input should be "
     "a valid string"),
    ([{"feature": "genres", "any_of": [["comedy"]]}], "filters.0.any_of.0: Input should be"),
    ([{"feature": "genres", "any_of": "comedy"}], "filters.0.any_of: Input should be a valid"),
    ([{"feature": "year", "min": "1990"}], "filters.0.min: Input should be a valid number"),
    ([{"feature": "year", "min": float("nan")}], "filters.0.min: Input should be a finite"),
    ([{"feature": "year", "max": 10**400}], "filters.0.max: Input should be a valid number"),
    ([{"feature": "year", "min": 1990, "below": 3}], "filters.0.below: Extra inputs are not"),
    ([{"any_of": ["comedy"]}], "filters.0.feature: Field required"),
    ([{"feature": "", "any_of": ["comedy"]}], "filters.0.feature: String should have at least"),
    (["genres"], "filters.0: Input should be an object"),
    ({"feature": "genres", "any_of": ["comedy"]}, "filters: Input should be a valid array"),
    ([YEAR] * 33, "filters: List should have at most 32 items"),
    ([{"feature": "genres", "any_of": ["zither"]}], "filters: they leave no item of the catalog "
     "of model 'attrs' version 1"),
    ([{"feature": "year", "min": 2011}], "filters: they leave no item of the catalog"),
    ([YEAR, {"feature": "year", "max": 1989.5}], "filters: they leave no item of the catalog"),
]  # fmt: skip


@pytest.mark.parametrize(("filters", "phrase"), BAD, ids=[phrase for _, phrase in BAD])
def test_every_bad_filter_is_refused_naming_it(
    client: httpx.Client, filters: Any, phrase: str
) -> None:
    answer = post(client, {**GOOD, "filters": filters})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith(f"invalid request: {phrase}")


def test_filters_that_leave_no_candidate_are_refused(client: httpx.Client) -> None:
    body = {**GOOD, "candidates": ["nope", "gone"], "filters": [YEAR]}
    answer = post(client, body)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "invalid request: filters: they leave no item of the candidates of model 'attrs' version 1"
    )
    # What the caller excludes may still take the rest: an empty list, as without filters.
    latest = {**GOOD, "k": N_ITEMS, "filters": [{"feature": "year", "min": 2008}]}
    kept = [item["item_id"] for item in post(client, latest).json()["items"]]
    assert kept
    emptied = post(client, {**latest, "exclude": kept})
    assert emptied.status_code == 200 and emptied.json()["items"] == []


def test_a_version_without_item_attributes_refuses_any_filter(client: httpx.Client) -> None:
    body = {"user_id": "a", "filters": [{"feature": "genres", "any_of": ["comedy"]}]}
    answer = post(client, body, PLAIN)
    assert answer.status_code == 400
    assert answer.json()["error"] == (
        "invalid request: filters.0: model 'plain' version 1 has no item attribute 'genres' "
        "(it has none)"
    )
    assert post(client, {"user_id": "a", "filters": []}, PLAIN).status_code == 200


def test_bad_filters_harm_no_good_request_sent_with_them(setup: Served) -> None:
    good_filters = [{"feature": "genres", "any_of": ["drama"]}, YEAR]
    expected = best(
        setup.model, "u3", survivors(setup.model, catalog(setup.model), good_filters), 5
    )
    good = {**GOOD, "filters": good_filters}

    bodies = [body for filters, _ in BAD for body in ({**GOOD, "filters": filters}, good)]
    answers = asyncio.run(all_at_once(setup.server.url, bodies))
    for (_, phrase), bad, ok in zip(BAD, answers[::2], answers[1::2], strict=True):
        assert bad.status_code == 400 and phrase in bad.json()["error"], phrase
        check(ok, expected)


async def all_at_once(url: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    """Every body posted concurrently, answers in order."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        sent = [http.post(f"/v1/models/{MODEL}/recommend", content=json.dumps(b)) for b in bodies]
        return list(await asyncio.gather(*sent))


def test_unknown_filter_values_are_counted_by_feature(setup: Served, client: httpx.Client) -> None:
    labels = {"model": MODEL, "kind": "filters:genres"}
    before = metric_value(setup.server.url, "recserve_unknown_ids_total", labels)
    filters = [{"feature": "genres", "any_of": ["comedy", "zither", "kazoo", "zither"]}]
    assert post(client, {**GOOD, "filters": filters}).status_code == 200
    after = metric_value(setup.server.url, "recserve_unknown_ids_total", labels)
    assert after - before == 2


# -- in process: the mask the two-stage path takes ---------------------------------------------


def test_the_keep_mask_is_by_item_row_and_fresh_per_request(tmp_path: Path) -> None:
    model = publish_feature_model(tmp_path, MODEL, n_items=N_ITEMS, seed=8, attributes=True)
    filters = [ItemFilter(feature="brand", none_of=["acme"]), ItemFilter(feature="year", max=1995)]
    raw = [{"feature": "brand", "none_of": ["acme"]}, {"feature": "year", "max": 1995}]

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get(MODEL)
            assert keep_mask(served, None) is None and keep_mask(served, []) is None
            mask = keep_mask(served, filters)
            assert mask is not None and mask.shape == (feeding_of(served).items.n_rows,)
            assert not mask[0]  # the unknown item has no year
            expected = survivors(model, catalog(model), raw)
            assert model.items.ids_of_rows(np.flatnonzero(mask)) == expected
            mask[:] = False  # the caller's to change: the next request gets its own
            again = keep_mask(served, filters)
            assert again is not None and model.items.ids_of_rows(np.flatnonzero(again)) == expected

    run(main())
