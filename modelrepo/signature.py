"""A model's signature: every input and output of its graph, and how a request fills each input.

Each input has a *role*, which says what kind of tensor it is:

- ``id``: INT64 ``[-1]``, a row of an embedding table bound to a vocabulary of ``n_rows`` rows
  (row 0 = unknown: every id the vocabulary does not hold). The user and item ids, and every
  categorical feature (its values are the vocabulary's ids);
- ``dense``: FP32 ``[-1, width]``, numeric features as the model sees them: standardised with the
  ``mean`` and ``std`` (one per column) of the training data, which the input declares;
- ``multi_hot``: INT64 ``[-1, L]``, a bag of up to ``L`` categories of a vocabulary, as rows padded
  with 0 (row 0 is also the unknown category, so an unknown value weighs like padding).

and a *source*, which says where ``/v1`` gets its value when it serves a request: the request's
``user`` or the candidate ``item`` (ids through the input's vocabulary), a ``user_table`` or
``item_table`` shipped with the version (a feature looked up by the user's or the item's row), or
the request's ``context``. A feature input (table or context) has a ``feature`` name: the name a
caller uses for it in ``/v1`` ``user_features`` and ``context``; :attr:`InputSpec.caller` says
whether a caller must, may or never supplies it there. V2 ``infer`` callers send every input's
tensor themselves, whatever its source.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from enum import StrEnum
from typing import Literal, Self

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


_FEATURE_SOURCES = (Source.USER_TABLE, Source.ITEM_TABLE, Source.CONTEXT)


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
    feature: str | None = Field(
        default=None,
        min_length=1,
        description="user_table, item_table, context: the feature's name in /v1 requests "
        "(default: the input's name)",
    )
    mean: tuple[float, ...] | None = Field(
        default=None, description="dense: the training data's mean of each column"
    )
    std: tuple[float, ...] | None = Field(
        default=None, description="dense: the training data's standard deviation of each column"
    )
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _feature_named(cls, data: object) -> object:
        """A feature input without a ``feature`` name is called by its input name."""
        if (
            isinstance(data, dict)
            and data.get("feature") is None
            and data.get("source") in [source.value for source in _FEATURE_SOURCES]
        ):
            return {**data, "feature": data.get("name")}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.role is not Role.DENSE and self.n_rows is None:
            raise ValueError(f"input '{self.name}': role {self.role} needs 'n_rows'")
        expected: tuple[str, tuple[int, ...]]
        if self.role is Role.ID:
            expected = ("INT64", (_BATCH,))
        elif self.role is Role.MULTI_HOT:
            length = self.shape[1] if len(self.shape) == 2 and self.shape[1] > 0 else 1
            expected = ("INT64", (_BATCH, length))
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
        self._check_statistics()
        return self

    def _check_statistics(self) -> None:
        if self.mean is None and self.std is None:
            return
        if self.role is not Role.DENSE:
            raise ValueError(f"input '{self.name}': only a dense input has 'mean' and 'std'")
        if self.mean is None or self.std is None:
            raise ValueError(f"input '{self.name}': 'mean' and 'std' go together")
        if len(self.mean) != self.width or len(self.std) != self.width:
            raise ValueError(f"input '{self.name}': 'mean' and 'std' need {self.width} values each")
        if not all(math.isfinite(m) for m in self.mean) or not all(
            math.isfinite(s) and s > 0 for s in self.std
        ):
            raise ValueError(f"input '{self.name}': 'mean' must be finite and 'std' positive")

    @property
    def caller(self) -> Literal["never", "may", "must"]:
        """Whether a ``/v1`` caller supplies this input: a ``context`` feature it must send; a
        ``user_table`` feature it may send in ``user_features`` (for a user the version does not
        know, or to override the table); everything else the server fills in."""
        if self.source is Source.CONTEXT:
            return "must"
        return "may" if self.source is Source.USER_TABLE else "never"

    @property
    def width(self) -> int:
        """Values per row: 1 for an id, the columns of a dense input, ``L`` for a bag."""
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
        for source in _FEATURE_SOURCES:
            features = [spec.feature for spec in self.inputs if spec.source is source]
            if len(set(features)) != len(features):
                raise ValueError(f"the {source} features {features} are not distinct")
        for source, owner in ((Source.USER_TABLE, Source.USER), (Source.ITEM_TABLE, Source.ITEM)):
            if any(spec.source is source for spec in self.inputs) and self.one_from(owner) is None:
                raise ValueError(f"{source} inputs need an input that takes the {owner} id")
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

    def tables(self) -> dict[str, tuple[InputSpec, ...]]:
        """The feature tables a version of this signature ships: file name -> its inputs."""
        files: dict[str, list[InputSpec]] = {}
        for spec in self.inputs:
            if spec.table is not None:
                files.setdefault(spec.table, []).append(spec)
        return {name: tuple(specs) for name, specs in files.items()}

    def table_rows(self, spec: InputSpec) -> int:
        """Rows of the table ``spec`` is looked up in: those of the user (or item) id input."""
        owner = self.one_from(Source.USER if spec.source is Source.USER_TABLE else Source.ITEM)
        if spec.table is None or owner is None or owner.n_rows is None:
            raise KeyError(f"input '{spec.name}' is not looked up in a table")
        return owner.n_rows

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
