"""Request models of the recommendation API: integer ids, limits, error messages."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from service.v1.schemas import MAX_ID_CHARS, MAX_ITEMS, RecommendRequest, ScoreRequest


def problems(model: Any, body: object) -> list[tuple[tuple[Any, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        model.model_validate_json(orjson.dumps(body))
    return [(error["loc"], error["msg"]) for error in caught.value.errors()]


def test_integer_ids_read_as_decimal_strings() -> None:
    score = ScoreRequest.model_validate_json(b'{"user_id": 4, "item_ids": ["a", 7, -2]}')
    assert (score.user_id, score.item_ids) == ("4", ["a", "7", "-2"])
    body = b'{"user_id": "u", "candidates": [1, "b"], "exclude": [3], "k": 2}'
    recommend = RecommendRequest.model_validate_json(body)
    assert (recommend.candidates, recommend.exclude) == (["1", "b"], ["3"])


def test_a_dict_given_is_left_as_it_was() -> None:
    body: dict[str, Any] = {"user_id": 4, "item_ids": [1, "x"]}
    assert ScoreRequest.model_validate(body).item_ids == ["1", "x"]
    assert body == {"user_id": 4, "item_ids": [1, "x"]}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"user_id": True, "item_ids": ["a"]}, ("user_id",)),
        ({"user_id": "u", "item_ids": ["a", 1.5]}, ("item_ids", 1)),
        ({"user_id": "u", "item_ids": ["a", False]}, ("item_ids", 1)),
        ({"user_id": "u", "item_ids": [None]}, ("item_ids", 0)),
        ({"user_id": "u", "item_ids": [["a"]]}, ("item_ids", 0)),
    ],
)
def test_ids_that_are_neither_strings_nor_integers_are_refused_by_position(
    body: dict[str, Any], where: tuple[Any, ...]
) -> None:
    assert problems(ScoreRequest, body) == [(where, "Input should be a valid string")]


def test_limits_name_the_field() -> None:
    assert problems(ScoreRequest, {"user_id": "", "item_ids": ["a"]}) == [
        (("user_id",), "String should have at least 1 character")
    ]
    assert problems(ScoreRequest, {"user_id": "u", "item_ids": ["x" * 257]}) == [
        (("item_ids", 0), "String should have at most 256 characters")
    ]
    for ids in (["i"] * (MAX_ITEMS + 1), [1] * (MAX_ITEMS + 1)):
        ((where, message),) = problems(RecommendRequest, {"user_id": "u", "candidates": ids})
        assert where == ("candidates",) and "at most 10000 items" in message
    assert problems(ScoreRequest, {"user_id": "u", "item_ids": []})[0][0] == ("item_ids",)


def test_the_schema_documents_ids_as_strings_or_integers_within_the_limit() -> None:
    properties = ScoreRequest.model_json_schema()["properties"]
    for schema in (properties["user_id"], properties["item_ids"]["items"]):
        string, integer = schema["anyOf"]
        assert (string["type"], string["maxLength"]) == ("string", MAX_ID_CHARS)
        assert integer["type"] == "integer"
    # The integers the schema allows are those whose decimal string fits the limit, and no more.
    for value, beyond in ((integer["minimum"], -1), (integer["maximum"], 1)):
        body = json.dumps({"user_id": value, "item_ids": ["i"]})
        assert ScoreRequest.model_validate_json(body).user_id == str(value)
        with pytest.raises(ValidationError):
            ScoreRequest.model_validate_json(
                json.dumps({"user_id": value + beyond, "item_ids": ["i"]})
            )


@pytest.mark.parametrize("k", ["5", True, 5.5])
def test_k_is_an_integer_as_the_schema_says(k: object) -> None:
    ((where, _),) = problems(RecommendRequest, {"user_id": "u", "k": k})
    assert where == ("k",)


def test_integral_numbers_are_integers_as_json_schema_counts_them() -> None:
    body = {"user_id": -7.0, "k": 5.0, "candidates": ["a", 3.0, 4], "exclude": [2.0]}
    request = RecommendRequest.model_validate_json(json.dumps(body))
    assert (request.user_id, request.k) == ("-7", 5)
    assert (request.candidates, request.exclude) == (["a", "3", "4"], ["2"])
    ((where, _),) = problems(ScoreRequest, {"user_id": 7.5, "item_ids": ["i"]})
    assert where == ("user_id",)
