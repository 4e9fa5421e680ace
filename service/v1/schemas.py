"""Request and response models of the recommendation API, with the limits it enforces."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

MAX_K = 1000
MAX_ITEMS = 10_000
MAX_ID_CHARS = 256


def _id_to_str(value: Any) -> Any:
    """Integers are accepted as ids and read as their decimal strings; anything else is checked."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


RawId = Annotated[
    str,
    BeforeValidator(_id_to_str),
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class RecommendRequest(_Strict):
    user_id: RawId = Field(description="Raw user id; unknown users get the unknown-id row.")
    k: int = Field(10, ge=1, le=MAX_K, description="How many items to return.")
    candidates: list[RawId] | None = Field(
        None,
        max_length=MAX_ITEMS,
        description="Items to rank; default: the whole catalog of the model version.",
    )
    exclude: list[RawId] | None = Field(
        None,
        max_length=MAX_ITEMS,
        description="Items never returned (e.g. already seen); unknown ids are ignored.",
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"user_id": "42", "k": 10, "exclude": ["1193", "661"]}]},
    )


class ScoreRequest(_Strict):
    user_id: RawId = Field(description="Raw user id; unknown users get the unknown-id row.")
    item_ids: list[RawId] = Field(
        min_length=1, max_length=MAX_ITEMS, description="Items to score, in the order given."
    )

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
