"""Does the adapted graph score as the original does? ONNX Runtime runs both on the same rows.

Each sampled row feeds the original graph what its author's code would (id ``r`` as row ``r``, in
the graph's own integer type; a bag as the graph's float weights, one per category it knows, or as
its integer rows) and the adapted graph what the server will (row ``r + 1``, int64; a bag as int64
rows padded with 0). The sampled bags have every length from empty to full, padding, repeated
categories and unknown ones (row 0), which the original's bag must not see. Every signature output
is compared with the graph output it maps, and the adapted graph must also give finite scores for
the unknown row, which the original has no counterpart for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import helper

from modelrepo import Role, Signature
from training.onnx_import import ImportFailure, TensorMap, first_line, graph_inputs


def _session(model: bytes, which: str) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own types, one per failure
        message = f"ONNX Runtime cannot load the {which} graph: {first_line(exc)}"
        raise ImportFailure(message) from None


def _run(session: Any, names: list[str], feeds: Mapping[str, np.ndarray], which: str) -> list[Any]:
    try:
        return list(session.run(names, dict(feeds)))
    except Exception as exc:  # as above
        message = f"ONNX Runtime cannot run the {which} graph: {first_line(exc)}"
        raise ImportFailure(message) from None


def sample_feeds(
    original: onnx.ModelProto, signature: Signature, mapping: TensorMap, rows: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The same ``rows`` sampled rows as the original graph takes them, and as the adapted one."""
    generator = np.random.default_rng(seed)
    dtypes = {
        t.name: np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
        for t in graph_inputs(original)
    }
    before: dict[str, np.ndarray] = {}
    after: dict[str, np.ndarray] = {}
    for spec in signature.inputs:
        name = mapping.inputs[spec.name]
        if spec.role is Role.ID:
            known = generator.integers(1, spec.n_rows or 1, rows, dtype=np.int64)
            after[spec.name], before[name] = known, (known - 1).astype(dtypes[name])
        elif spec.role is Role.MULTI_HOT:
            bags = sample_bags(generator, rows, spec.width, spec.n_rows or 1)
            after[spec.name] = bags
            if np.issubdtype(dtypes[name], np.integer):  # the graph takes rows as we do
                before[name] = bags.astype(dtypes[name])
            else:
                before[name] = weights(bags, spec.n_rows or 1).astype(dtypes[name])
        else:
            dense = generator.standard_normal((rows, spec.width)).astype(np.float32)
            before[name] = after[spec.name] = dense
    return before, after


def sample_bags(generator: np.random.Generator, rows: int, length: int, n_rows: int) -> np.ndarray:
    """``rows`` bags as the server feeds them: int64 ``[rows, length]``, each of a random length
    (empty to full) padded with 0, with unknown categories (row 0) among the values and a
    repeated category in about a quarter of them."""
    values = generator.integers(0, n_rows, (rows, length), dtype=np.int64)
    values[generator.random((rows, length)) < 0.1] = 0  # unknown, however large the vocabulary
    if length > 1:
        repeat = generator.random(rows) < 0.25
        values[repeat, -1] = values[repeat, 0]
    lengths = generator.integers(0, length + 1, rows)
    return np.where(np.arange(length) < lengths[:, None], values, 0)


def weights(bags: np.ndarray, n_rows: int) -> np.ndarray:
    """The float bag of a graph that knows no unknown category: ``[N, n_rows - 1]``, 1 for each
    category in the bag (once, however often it is there), 0 for the rest; padding and unknown
    rows weigh nothing."""
    hot = np.zeros((len(bags), n_rows), np.float32)
    hot[np.arange(len(bags))[:, None], bags] = 1.0
    return hot[:, 1:]


def unknown_feeds(signature: Signature, adapted: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``adapted`` with every id on the unknown row and every bag holding only the unknown row 0
    (which is also the padding: an empty bag)."""
    feeds = dict(adapted)
    for spec in signature.inputs:
        if spec.role in (Role.ID, Role.MULTI_HOT):
            feeds[spec.name] = np.zeros_like(adapted[spec.name])
    return feeds


def parity(
    original: onnx.ModelProto,
    adapted: bytes,
    signature: Signature,
    mapping: TensorMap,
    *,
    rows: int = 256,
    seed: int = 0,
) -> float:
    """Largest absolute difference between the two graphs over every output, on ``rows`` rows.

    Raises :class:`ImportFailure` when either graph cannot be loaded or run, or when the adapted
    graph gives a non-finite output for unknown ids.
    """
    before, after = sample_feeds(original, signature, mapping, rows, seed)
    names = [spec.name for spec in signature.outputs]
    served = _session(adapted, "adapted")
    got = _run(served, names, after, "adapted")
    session = _session(original.SerializeToString(), "original")
    expected = _run(session, [mapping.outputs[n] for n in names], before, "original")
    errors: list[float] = []
    for name, ours, theirs in zip(names, got, expected, strict=True):
        ours = np.asarray(ours, dtype=np.float64)
        theirs = np.asarray(theirs, dtype=np.float64)
        if theirs.size != ours.size:
            raise ImportFailure(
                f"output '{name}' has {ours.size} values for {rows} rows, the original "
                f"{theirs.size}"
            )
        errors.append(float(np.max(np.abs(ours - theirs.reshape(ours.shape)), initial=0.0)))
    unknown = _run(served, names, unknown_feeds(signature, after), "adapted")
    for name, values in zip(names, unknown, strict=True):
        if not np.all(np.isfinite(np.asarray(values, dtype=np.float64))):
            raise ImportFailure(f"output '{name}' is not finite for unknown ids and empty bags")
    return float(np.max(errors))  # NaN, if any, comes through: it must not pass for agreement
