"""One feature value a ``/v1`` caller sends (in ``user_features`` or ``context``) as the row of its
input's tensor, or a 400 naming the field and the feature.

What each role takes, as JSON:

- ``id`` (a categorical feature): a string, or an integer read as its decimal string (as ids are);
  a value the input's vocabulary does not hold is served from row 0, the unknown row;
- ``multi_hot``: a list of such values, duplicates ignored, at most ``L`` distinct ones (the
  input's bag length); padded with row 0, which is also where unknown values go;
- ``dense``: a finite number (a list of ``width`` numbers when ``width > 1``), standardised with
  the input's ``mean`` and ``std`` as the training data was, so that the model sees what it
  learned from. JSON may spell a number too large for a double (``1e999``, or an integer of
  hundreds of digits): such a value is not finite and refused, as are NaN and infinities.

The checks run before anything is looked up or queued, so a refused request costs no model time
and harms no request it would have shared a batch with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelrepo import UNKNOWN_ROW, InputSpec, Role, Vocabulary
from service.errors import InvalidInput


@dataclass
class Encoded:
    """The values a request sent, as rows of their inputs, and the unknown values by metric kind."""

    rows: dict[str, np.ndarray] = field(default_factory=dict)  # input name -> one row
    unknown: dict[str, int] = field(default_factory=dict)  # "<field>:<feature>" -> count


def refuse(where: str, problem: str) -> InvalidInput:
    """The 400 of one feature value: ``invalid request: user_features.age: <problem>``."""
    return InvalidInput(f"invalid request: {where}: {problem}")


def encode_value(
    spec: InputSpec, value: Any, where: str, vocabulary: Vocabulary | None, encoded: Encoded
) -> None:
    """Add ``value`` (sent for ``spec`` at ``where``, e.g. ``context.device``) to ``encoded``."""
    if spec.role is Role.DENSE:
        encoded.rows[spec.name] = _numbers(spec, value, where)
        return
    assert vocabulary is not None  # the feeding refuses a caller feature without one
    if spec.role is Role.ID:
        raw = _category(value)
        if raw is None:
            raise refuse(where, "a categorical feature takes a string or an integer")
        row = vocabulary.row(raw)
        encoded.rows[spec.name] = np.array(row, dtype=np.int64)
        unknown = int(row == UNKNOWN_ROW)
    else:
        rows, unknown = _bag(spec, value, where, vocabulary)
        encoded.rows[spec.name] = rows
    if unknown:
        encoded.unknown[where.replace(".", ":", 1)] = unknown


def _category(value: Any) -> str | None:
    """A categorical value as its string (an integer as its decimal string); None: neither."""
    if type(value) is str:
        return value
    if type(value) is int or (type(value) is float and value.is_integer()):
        return str(int(value))
    return None


def _bag(spec: InputSpec, value: Any, where: str, vocabulary: Vocabulary) -> tuple[np.ndarray, int]:
    """A multi-hot value as its padded row of ``L`` categories, and how many were unknown."""
    if type(value) is not list:
        raise refuse(where, "a multi-hot feature takes a list of strings")
    raws = [_category(item) for item in value]
    if any(raw is None for raw in raws):
        raise refuse(where, "a multi-hot feature takes a list of strings")
    distinct = list(dict.fromkeys(raw for raw in raws if raw is not None))
    if len(distinct) > spec.width:
        raise refuse(where, f"{len(distinct)} distinct values; the bag holds at most {spec.width}")
    rows = np.zeros(spec.width, dtype=np.int64)
    found, unknown = vocabulary.rows(distinct)
    rows[: len(found)] = found
    return rows, len(unknown)


def _numbers(spec: InputSpec, value: Any, where: str) -> np.ndarray:
    """A numeric value as its standardised float32 row of ``width`` columns."""
    width = spec.width
    values = value if width > 1 else [value]
    if type(values) is not list or len(values) != width or not all(map(_is_number, values)):
        shape = "a number" if width == 1 else f"a list of {width} numbers"
        raise refuse(where, f"a numeric feature takes {shape}")
    try:
        raw = np.array([float(number) for number in values], dtype=np.float64)
    except OverflowError:  # an integer beyond the range of a double
        raw = np.full(width, np.inf)
    if spec.mean is not None and spec.std is not None:
        raw = (raw - np.array(spec.mean)) / np.array(spec.std)
    with np.errstate(over="ignore"):
        row = raw.astype(np.float32)
    if not np.isfinite(row).all():
        raise refuse(where, "not a finite number (or too large once standardised)")
    return row


def _is_number(value: Any) -> bool:
    return type(value) is int or type(value) is float
