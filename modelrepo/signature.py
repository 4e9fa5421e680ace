"""A model's signature: every input and output of its graph, and how a request fills each input.

Each input has a *role*, which says what kind of tensor it is:

- ``id``: INT64 ``[-1]``, a row of an embedding table bound to a vocabulary of ``n_rows`` rows
  (row 0 = unknown: every id the vocabulary does not hold);
- ``dense``: FP32 ``[-1, width]``, numeric features;
- ``multi_hot``: FP32 ``[-1, n_rows]``, a bag of category ids of a vocabulary, one weight per
  category (0 or 1; the bag's embedding is the weighted sum of the table's rows).

and a *source*, which says where ``/v1`` gets its value when it serves a request: the request's
``user`` or the candidate ``item`` (ids through the input's vocabulary), a ``user_table`` or
``item_table`` shipped with the version (a feature looked up by the user's or the item's row), or
the request's ``context``. V2 ``infer`` callers send every input themselves, whatever its source.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from modelrepo.layout import ITEMS_FILE, USERS_FILE

_BATCH = -1


class Role(StrEnum):
    ID = "id"
    DENSE = "dense"
    MULTI_HOT = "multi_hot"


class Source(StrEnum):
    USER = "user"
    ITEM = "item"
    USER_TABLE = "user_table"
    ITEM_TABLE = "item_table"
    CONTEXT = "context"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Frozen):
    """One input of the graph."""

    name: str = Field(min_length=1)
    role: Role
    source: Source
    dtype: str
    shape: tuple[int, ...]
    n_rows: int | None = Field(default=None, ge=1, description="id, multi_hot: rows incl. row 0")
    vocabulary: str | None = Field(
        default=None, description="id, multi_hot: the vocabulary file shipped with the version"
    )
    table: str | None = Field(
        default=None, description="user_table, item_table: the feature table of the version"
    )
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.role is not Role.DENSE and self.n_rows is None:
            raise ValueError(f"input '{self.name}': role {self.role} needs 'n_rows'")
        expected: tuple[str, tuple[int, ...]]
        if self.role is Role.ID:
            expected = ("INT64", (_BATCH,))
        elif self.role is Role.MULTI_HOT:
            expected = ("FP32", (_BATCH, self.n_rows or 0))
        else:
            width = self.shape[1] if len(self.shape) == 2 and self.shape[1] > 0 else 1
            expected = ("FP32", (_BATCH, width))
        if (self.dtype, self.shape) != expected:
            raise ValueError(
                f"input '{self.name}': role {self.role} is {expected[0]} {list(expected[1])}, "
                f"not {self.dtype} {list(self.shape)}"
            )
        if self.source in (Source.USER, Source.ITEM) and (
            self.role is not Role.ID or self.vocabulary is None
        ):
            raise ValueError(
                f"input '{self.name}': source {self.source} is an id input with a vocabulary"
            )
        if self.source in (Source.USER_TABLE, Source.ITEM_TABLE) and self.table is None:
            raise ValueError(f"input '{self.name}': source {self.source} needs 'table'")
        return self

    @property
    def width(self) -> int:
        """Values per row: 1 for an id, the feature width for dense, the categories for a bag."""
        if self.role is Role.ID:
            return 1
        return self.shape[1] if len(self.shape) == 2 else 0


class OutputSpec(_Frozen):
    name: str = Field(min_length=1)
    dtype: str
    shape: tuple[int, ...]
    description: str = ""


class Signature(_Frozen):
    """The inputs and outputs of a model version; ``score`` names the output ``/v1`` ranks by."""

    inputs: tuple[InputSpec, ...] = Field(min_length=1)
    outputs: tuple[OutputSpec, ...] = Field(min_length=1)
    score: str

    @model_validator(mode="after")
    def _names(self) -> Self:
        names = [spec.name for spec in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names {names} are not distinct")
        outputs = [spec.name for spec in self.outputs]
        if len(set(outputs)) != len(outputs):
            raise ValueError(f"output names {outputs} are not distinct")
        if self.score not in outputs:
            raise ValueError(f"score output '{self.score}' is not among the outputs {outputs}")
        for source in (Source.USER, Source.ITEM):
            bound = [spec.name for spec in self.inputs if spec.source is source]
            if len(bound) > 1:
                raise ValueError(f"inputs {bound} all take the {source}; at most one may")
        return self

    def input(self, name: str) -> InputSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def from_source(self, source: Source) -> Iterator[InputSpec]:
        return (spec for spec in self.inputs if spec.source is source)

    def one_from(self, source: Source) -> InputSpec | None:
        """The input that takes the request's user (or the candidate item), if the model has one."""
        return next(self.from_source(source), None)

    @property
    def score_output(self) -> OutputSpec:
        return next(spec for spec in self.outputs if spec.name == self.score)


def two_id_signature(n_user_rows: int, n_item_rows: int) -> Signature:
    """The signature of the collaborative-filtering models: a user row and an item row -> score."""
    return Signature(
        inputs=(
            InputSpec(
                name="user", role=Role.ID, source=Source.USER, dtype="INT64", shape=(_BATCH,),
                n_rows=n_user_rows, vocabulary=USERS_FILE, description="user row",
            ),
            InputSpec(
                name="item", role=Role.ID, source=Source.ITEM, dtype="INT64", shape=(_BATCH,),
                n_rows=n_item_rows, vocabulary=ITEMS_FILE, description="item row",
            ),
        ),
        outputs=(
            OutputSpec(
                name="score", dtype="FP32", shape=(_BATCH,),
                description="probability of an interaction",
            ),
        ),
        score="score",
    )  # fmt: skip
