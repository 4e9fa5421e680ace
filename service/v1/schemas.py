"""Request and response models of the recommendation API, with the limits it enforces."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

MAX_K = 1000
MAX_ITEMS = 10_000
MAX_ID_CHARS = 256
MAX_FILTERS = 32
MAX_FILTER_VALUES = 1000

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


FilterValue = Annotated[
    str,
    BeforeValidator(_id_to_str),
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS),
    WithJsonSchema(_RAW_ID_SCHEMA),
]
"""A categorical value a filter names; an integer is read as its decimal string."""


class ItemFilter(BaseModel):
    """One filter on an item attribute (an item feature of the version): keep the items whose
    value is among ``any_of``, drop those among ``none_of`` (a categorical or multi-hot feature),
    or keep those within ``[min, max]`` (a numeric one, in raw units). What each attribute takes
    is checked against the version's signature when the request is served."""

    feature: str = Field(
        min_length=1, max_length=MAX_ID_CHARS, description="The item feature's name."
    )
    any_of: list[FilterValue] | None = Field(
        None,
        min_length=1,
        max_length=MAX_FILTER_VALUES,
        description="Keep items with at least one of these values.",
    )
    none_of: list[FilterValue] | None = Field(
        None,
        min_length=1,
        max_length=MAX_FILTER_VALUES,
        description="Drop items with any of these values.",
    )
    min: float | None = Field(
        None, strict=True, allow_inf_nan=False, description="Keep items >= this (inclusive)."
    )
    max: float | None = Field(
        None, strict=True, allow_inf_nan=False, description="Keep items <= this (inclusive)."
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"feature": "genres", "any_of": ["Comedy", "Drama"]}]},
    )

    @model_validator(mode="after")
    def _one_kind(self) -> ItemFilter:
        values = self.any_of is not None or self.none_of is not None
        bounds = self.min is not None or self.max is not None
        if values == bounds:
            raise ValueError(
                f"the filter on '{self.feature[:64]}' takes 'any_of' and/or 'none_of' (values), "
                "or 'min' and/or 'max' (a range), and not both kinds"
            )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(
                f"the filter on '{self.feature[:64]}': 'min' {self.min:g} is above 'max' "
                f"{self.max:g}"
            )
        return self


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
    mode: Literal["exhaustive", "two_stage"] | None = Field(
        None,
        description=(
            "How the catalog is searched when no `candidates` are sent. `exhaustive`: the ranking "
            "model scores every item. `two_stage`: the version's retrieval index picks "
            "`retrieve_n` items (seen and excluded ones left out), the ranking model ranks them; "
            "only for versions that ship retrieval vectors. Default: two-stage when the version "
            "has them and its catalog is above its config's `retrieval.two_stage_above_items`, "
            "else exhaustive. The response's `mode` says which served."
        ),
    )
    retrieve_n: int | None = Field(
        None,
        ge=1,
        strict=True,
        description=(
            "Two-stage: how many items the retrieval stage hands to the ranking model (at least "
            "`k` are asked for). Default and bound: the model config's `retrieval.retrieve_n` and "
            "`retrieval.max_retrieve_n` (200 and 2000 unless set); above the bound: 400."
        ),
    )
    filters: list[ItemFilter] | None = Field(
        None,
        max_length=MAX_FILTERS,
        description=(
            "Filters on item attributes (the version's item features), all of which an item must "
            "pass, applied before ranking to the catalog and to `candidates`. A value the "
            "attribute's vocabulary does not hold matches nothing. An attribute the version does "
            "not have, or a filter of the wrong kind for it: 400 naming the filter; filters that "
            "leave no item: 400."
        ),
        examples=[[{"feature": "genres", "any_of": ["Comedy"]}, {"feature": "year", "min": 1990}]],
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
    mode: Literal["exhaustive", "two_stage", "candidates"] = Field(
        description=(
            "What served it: the whole catalog ranked, retrieval then ranking, or the request's "
            "`candidates` ranked."
        )
    )


class ScoreResponse(BaseModel):
    model_name: str
    model_version: str
    user_id: str
    scores: list[float] = Field(description="One score per requested item, in request order.")
    unknown: UnknownIds
