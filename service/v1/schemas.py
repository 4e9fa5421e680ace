"""Request and response models of the recommendation API, with the limits it enforces."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

MAX_K = 1000
MAX_ITEMS = 10_000
MAX_ID_CHARS = 256

# As the schema says it: a string, or an integer whose decimal string fits the same limit.
_RAW_ID_SCHEMA = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
        {
            "type": "integer",
            "minimum": 1 - 10 ** (MAX_ID_CHARS - 1),
            "maximum": 10**MAX_ID_CHARS - 1,
            "description": "Read as its decimal string.",
        },
    ]
}
RawId = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS), WithJsonSchema(_RAW_ID_SCHEMA)
]
"""A raw user or item id; an integer is accepted too and read as its decimal string."""


# A feature value as the schema says it; what each feature takes is the model's signature's.
_FEATURE_VALUE = {
    "anyOf": [
        {"type": "string"},
        {"type": "number"},
        {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
    ]
}


def _features_schema(description: str, example: dict[str, Any]) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "object", "additionalProperties": _FEATURE_VALUE},
                {"type": "null"},
            ],
            "default": None,
            "description": description,
            "examples": [example],
        }
    )


UserFeatures = Annotated[
    dict[str, Any] | None,
    _features_schema(
        "A feature model's user features, by name: for a user the version does not know, or to "
        "override its stored ones. A categorical feature takes a string (or an integer), a "
        "multi-hot one a list of strings, a numeric one a number (a list for several columns). "
        "The model's signature says which it takes; any other is refused.",
        {"age": 31, "occupation": "engineer"},
    ),
]
Context = Annotated[
    dict[str, Any] | None,
    _features_schema(
        "A feature model's request-time features, by name (values as in `user_features`): every "
        "context feature its signature declares, and no other.",
        {"device": "mobile", "hour": 21},
    ),
]


def _is_integer(value: Any) -> bool:
    """An integer as JSON Schema counts one: ``3`` and also ``3.0`` (not ``true``)."""
    return type(value) is int or (type(value) is float and value.is_integer())


def _is_str(value: Any) -> bool:
    return type(value) is str


def _id_to_str(value: Any) -> Any:
    return str(int(value)) if _is_integer(value) else value


class _IdRequest(BaseModel):
    """A request body whose id fields (``ID_FIELDS``) take integers too, read as decimal strings.

    The integers are converted once per request, over the parsed body, before validation: the ids
    themselves are then checked by pydantic's compiled validators, not by Python code per id.
    """

    ID_FIELDS: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _integer_ids(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        converted: dict[str, Any] = {}
        for name in cls.ID_FIELDS:
            value = data.get(name)
            if _is_integer(value):
                converted[name] = _id_to_str(value)
            elif type(value) is list and len(value) <= MAX_ITEMS and not all(map(_is_str, value)):
                converted[name] = [_id_to_str(v) for v in value]  # longer lists are refused
        if type(data.get("k")) is float and _is_integer(data["k"]):
            converted["k"] = int(data["k"])  # 5.0 is the integer 5, as the schema counts
        return {**data, **converted} if converted else data


class RecommendRequest(_IdRequest):
    ID_FIELDS = ("user_id", "candidates", "exclude")

    user_id: RawId = Field(description="Raw user id; unknown users get the unknown-id row.")
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description="How many items to return.")
    candidates: list[RawId] | None = Field(
        None,
        max_length=MAX_ITEMS,
        description="Items to rank; default: the whole catalog of the model version.",
    )
    exclude: list[RawId] | None = Field(
        None,
        max_length=MAX_ITEMS,
        description="Items never returned (on top of `exclude_seen`); unknown ids are ignored.",
    )
    exclude_seen: bool = Field(
        True,
        strict=True,
        description=(
            "Leave out the items the user interacted with in the data the version was trained on "
            "(published with it); `exclude` applies on top. False returns them too. Versions "
            "without a published history (imported models) and unknown users have none."
        ),
    )
    user_features: UserFeatures = None
    context: Context = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "42", "k": 10, "exclude": ["1193", "661"]}]},
    )


class ScoreRequest(_IdRequest):
    ID_FIELDS = ("user_id", "item_ids")

    user_id: RawId = Field(description="Raw user id; unknown users get the unknown-id row.")
    item_ids: list[RawId] = Field(
        min_length=1, max_length=MAX_ITEMS, description="Items to score, in the order given."
    )
    user_features: UserFeatures = None
    context: Context = None

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "42", "item_ids": ["1193", "661", "914"]}]},
    )


class UnknownIds(BaseModel):
    user_id: bool = Field(description="True when the user is not in the version's vocabulary.")
    item_ids: list[str] = Field(description="Requested item ids not in the vocabulary.")


class ScoredItem(BaseModel):
    item_id: str
    score: float


class RecommendResponse(BaseModel):
    model_name: str
    model_version: str
    user_id: str
    items: list[ScoredItem] = Field(description="Best first; ties broken by item id.")
    unknown: UnknownIds


class ScoreResponse(BaseModel):
    model_name: str
    model_version: str
    user_id: str
    scores: list[float] = Field(description="One score per requested item, in request order.")
    unknown: UnknownIds
