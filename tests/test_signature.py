"""The signature: each input's role fixes its dtype and shape, names are distinct, the score output
exists, at most one input takes the request's user and one the candidate item."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from modelrepo import InputSpec, OutputSpec, Role, Signature, Source, two_id_signature
from modelrepo.layout import ITEMS_FILE, USERS_FILE

SCORE = OutputSpec(name="score", dtype="FP32", shape=(-1,))


def _id_input(name: str, source: Source = Source.CONTEXT, **changes: Any) -> InputSpec:
    fields: dict[str, Any] = {
        "name": name,
        "role": Role.ID,
        "source": source,
        "dtype": "INT64",
        "shape": (-1,),
        "n_rows": 10,
        "vocabulary": f"{name}.txt",
    }
    return InputSpec.model_validate({**fields, **changes})


def test_two_id_signature_is_the_served_contract() -> None:
    signature = two_id_signature(51, 41)
    user, item = signature.inputs
    assert (user.name, user.role, user.source, user.dtype, user.shape) == (
        "user", Role.ID, Source.USER, "INT64", (-1,),
    )  # fmt: skip
    assert (item.name, item.role, item.source, item.dtype, item.shape) == (
        "item", Role.ID, Source.ITEM, "INT64", (-1,),
    )  # fmt: skip
    assert (user.n_rows, user.vocabulary) == (51, USERS_FILE)
    assert (item.n_rows, item.vocabulary) == (41, ITEMS_FILE)
    assert [(o.name, o.dtype, o.shape) for o in signature.outputs] == [("score", "FP32", (-1,))]
    assert signature.score_output.name == "score"
    assert signature.one_from(Source.USER) is user
    assert signature.one_from(Source.ITEM) is item
    assert signature.one_from(Source.CONTEXT) is None
    assert signature.input("item") is item
    with pytest.raises(KeyError):
        signature.input("product")
    assert user.width == item.width == 1


def test_signature_round_trips_through_json() -> None:
    signature = Signature(
        inputs=(
            _id_input("user", Source.USER, vocabulary=USERS_FILE),
            _id_input("item", Source.ITEM, vocabulary=ITEMS_FILE),
            InputSpec(name="user_age", role=Role.DENSE, source=Source.USER_TABLE, dtype="FP32",
                      shape=(-1, 3), table="user_features.npz", feature="age",
                      mean=(30.0, 1.0, 0.0), std=(10.0, 1.0, 2.5)),
            InputSpec(name="item_genres", role=Role.MULTI_HOT, source=Source.ITEM_TABLE,
                      dtype="INT64", shape=(-1, 6), n_rows=19, vocabulary="genres.txt",
                      table="item_features.npz", feature="genres"),
            InputSpec(name="hour", role=Role.DENSE, source=Source.CONTEXT, dtype="FP32",
                      shape=(-1, 1)),
        ),
        outputs=(SCORE, OutputSpec(name="logit", dtype="FP32", shape=(-1,))),
        score="score",
    )  # fmt: skip
    assert Signature.model_validate_json(signature.model_dump_json()) == signature
    assert [spec.width for spec in signature.inputs] == [1, 1, 3, 6, 1]
    assert [spec.name for spec in signature.from_source(Source.ITEM_TABLE)] == ["item_genres"]
    assert [spec.caller for spec in signature.inputs] == ["never", "never", "may", "never", "must"]
    # a feature input without a feature name is called by its input name
    assert [spec.feature for spec in signature.inputs] == [None, None, "age", "genres", "hour"]
    assert {name: [s.name for s in specs] for name, specs in signature.tables().items()} == {
        "user_features.npz": ["user_age"],
        "item_features.npz": ["item_genres"],
    }
    assert signature.table_rows(signature.input("user_age")) == 10  # the user id input's rows


# (fields of an input, a phrase of the refusal)
BAD_INPUTS: dict[str, tuple[dict[str, Any], str]] = {
    "id as FP32": ({"role": "id", "dtype": "FP32", "shape": [-1], "n_rows": 5}, "is INT64 [-1]"),
    "id with a width": (
        {"role": "id", "dtype": "INT64", "shape": [-1, 1], "n_rows": 5},
        "not INT64 [-1, 1]",
    ),
    "id without rows": ({"role": "id", "dtype": "INT64", "shape": [-1]}, "needs 'n_rows'"),
    "multi-hot as a float bag": (
        {"role": "multi_hot", "dtype": "FP32", "shape": [-1, 4], "n_rows": 5},
        "is INT64 [-1, 4]",
    ),
    "multi-hot without a length": (
        {"role": "multi_hot", "dtype": "INT64", "shape": [-1], "n_rows": 5},
        "is INT64 [-1, 1]",
    ),
    "multi-hot without rows": (
        {"role": "multi_hot", "dtype": "INT64", "shape": [-1, 4]},
        "needs 'n_rows'",
    ),
    "statistics of an id": (
        {"role": "id", "dtype": "INT64", "shape": [-1], "n_rows": 5, "mean": [0], "std": [1]},
        "only a dense input",
    ),
    "mean without std": (
        {"role": "dense", "dtype": "FP32", "shape": [-1, 1], "mean": [0.5]},
        "go together",
    ),
    "statistics of the wrong width": (
        {"role": "dense", "dtype": "FP32", "shape": [-1, 2], "mean": [0], "std": [1]},
        "need 2 values each",
    ),
    "zero std": (
        {"role": "dense", "dtype": "FP32", "shape": [-1, 1], "mean": [0], "std": [0]},
        "'std' positive",
    ),
    "infinite mean": (
        {"role": "dense", "dtype": "FP32", "shape": [-1, 1], "mean": ["inf"], "std": [1]},
        "'mean' must be finite",
    ),
    "dense as INT64": ({"role": "dense", "dtype": "INT64", "shape": [-1, 4]}, "is FP32 [-1, 4]"),
    "dense without a width": ({"role": "dense", "dtype": "FP32", "shape": [-1]}, "[-1, 1]"),
    "user from a dense input": (
        {"role": "dense", "dtype": "FP32", "shape": [-1, 2], "source": "user"},
        "is an id input with a vocabulary",
    ),
    "item without a vocabulary": (
        {"role": "id", "dtype": "INT64", "shape": [-1], "n_rows": 5, "source": "item"},
        "is an id input with a vocabulary",
    ),
    "table source without a table": (
        {"role": "dense", "dtype": "FP32", "shape": [-1, 2], "source": "user_table"},
        "needs 'table'",
    ),
    "unknown role": ({"role": "sparse", "dtype": "FP32", "shape": [-1]}, "role"),
    "zero rows": ({"role": "id", "dtype": "INT64", "shape": [-1], "n_rows": 0}, "n_rows"),
    "unknown field": (
        {"role": "dense", "dtype": "FP32", "shape": [-1, 1], "default": 0},
        "default",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_an_input_whose_role_dtype_and_shape_disagree_is_refused(case: str) -> None:
    fields, phrase = BAD_INPUTS[case]
    with pytest.raises(ValidationError, match=phrase.replace("[", r"\[")):
        InputSpec.model_validate({"name": "x", "source": "context", **fields})


def test_dense_and_multi_hot_inputs_of_the_right_shape_are_accepted() -> None:
    dense = InputSpec(name="d", role=Role.DENSE, source=Source.CONTEXT, dtype="FP32", shape=(-1, 4))
    bag = InputSpec(
        name="b", role=Role.MULTI_HOT, source=Source.CONTEXT, dtype="INT64", shape=(-1, 7), n_rows=3
    )
    assert (dense.width, bag.width) == (4, 7)


# (inputs, outputs, score output, a phrase of the refusal)
BAD_SIGNATURES: dict[str, tuple[tuple[InputSpec, ...], tuple[OutputSpec, ...], str, str]] = {
    "duplicate inputs": ((_id_input("a"), _id_input("a")), (SCORE,), "score", "not distinct"),
    "duplicate outputs": ((_id_input("a"),), (SCORE, SCORE), "score", "not distinct"),
    "no such score output": ((_id_input("a"),), (SCORE,), "logit", "is not among the outputs"),
    "two user inputs": (
        (_id_input("a", Source.USER), _id_input("b", Source.USER)),
        (SCORE,),
        "score",
        "all take the user; at most one may",
    ),
    "two item inputs": (
        (_id_input("a", Source.ITEM), _id_input("b", Source.ITEM)),
        (SCORE,),
        "score",
        "all take the item; at most one may",
    ),
    "two context features of one name": (
        (_id_input("a", feature="f"), _id_input("b", feature="f")),
        (SCORE,),
        "score",
        "the context features",
    ),
    "a user table without a user input": (
        (_id_input("a", Source.USER_TABLE, table="user_features.npz"),),
        (SCORE,),
        "score",
        "need an input that takes the user id",
    ),
    "no inputs": ((), (SCORE,), "score", "inputs"),
    "no outputs": ((_id_input("a"),), (), "score", "outputs"),
}


@pytest.mark.parametrize("case", sorted(BAD_SIGNATURES))
def test_an_inconsistent_signature_is_refused(case: str) -> None:
    inputs, outputs, score, phrase = BAD_SIGNATURES[case]
    with pytest.raises(ValidationError, match=phrase):
        Signature(inputs=inputs, outputs=outputs, score=score)


def test_specs_are_frozen() -> None:
    spec = _id_input("a")
    with pytest.raises(ValidationError):
        spec.n_rows = 3  # type: ignore[misc]
