"""The inputs of the dlrm kind: its signature (the two ids, then every side feature) and the
check of explicit feeds against it, apart from the model so that its module stays about the
computation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from modelrepo import Role, Signature, Source, table_type, two_id_signature, value_fault
from modelrepo.layout import ITEMS_FILE
from modelrepo.signature import InputSpec
from training.models.side import SideFeature

Feeds = Mapping[str, NDArray[Any]]
"""Every input of the signature by name, as the ONNX graph takes them."""


def joins_user_vector(spec: InputSpec) -> bool:
    """Whether input ``spec`` is a bag of the user's items (a user-side multi-hot input over the
    item ids), whose mean embedding joins the user's id vector in the MF head (SVD++'s implicit
    feedback term: a user is also what they interacted with)."""
    return (
        spec.role is Role.MULTI_HOT
        and spec.source is Source.USER_TABLE
        and spec.vocabulary == ITEMS_FILE
    )


def dlrm_signature(
    n_user_rows: int, n_item_rows: int, features: Sequence[SideFeature]
) -> Signature:
    """The two ids, then every side feature in order; the score output as every kind's."""
    ids = two_id_signature(n_user_rows, n_item_rows)
    inputs = (*ids.inputs, *(feature.input_spec() for feature in features))
    return Signature(inputs=inputs, outputs=ids.outputs, score=ids.score)


def check_feeds(signature: Signature, feeds: Feeds) -> dict[str, NDArray[Any]]:
    """``feeds`` checked against ``signature``: every input, its type, shape and range; a bad
    one raises ValueError naming it."""
    names = [spec.name for spec in signature.inputs]
    if set(feeds) != set(names):
        raise ValueError(f"the model takes the inputs {names}, given {sorted(feeds)}")
    n_rows = np.asarray(feeds["user"]).shape[:1]
    checked: dict[str, NDArray[Any]] = {}
    for spec in signature.inputs:
        value = np.asarray(feeds[spec.name])
        dtype, shape = table_type(spec, n_rows[0] if n_rows else 0)
        kind = np.floating if spec.role is Role.DENSE else np.integer
        if value.shape != shape or not np.issubdtype(value.dtype, kind):
            raise ValueError(
                f"input '{spec.name}' is {value.dtype}{list(value.shape)}, expected "
                f"{np.dtype(dtype)}{list(shape)}"
            )
        fault = value_fault(spec, value)
        if fault:
            raise ValueError(f"input '{spec.name}' {fault}")
        checked[spec.name] = value
    return checked
