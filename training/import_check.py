"""Does the adapted graph score as the original does? ONNX Runtime runs both on the same rows.

Each sampled row feeds the original graph what its author's code would (id ``r`` as row ``r``, in
the graph's own integer type; a bag without the unknown column) and the adapted graph what the
server will (row ``r + 1``, int64; a bag with an empty column 0). Every signature output is compared
with the graph output it maps, and the adapted graph must also give finite scores for the unknown
row, which the original has no counterpart for.
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
            bag = (generator.random((rows, spec.width - 1)) < 0.3).astype(np.float32)
            before[name] = bag
            after[spec.name] = np.concatenate([np.zeros((rows, 1), np.float32), bag], axis=1)
        else:
            dense = generator.standard_normal((rows, spec.width)).astype(np.float32)
            before[name] = after[spec.name] = dense
    return before, after


def unknown_feeds(signature: Signature, adapted: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``adapted`` with every id on the unknown row and every bag holding the unknown category."""
    feeds = dict(adapted)
    for spec in signature.inputs:
        if spec.role is Role.ID:
            feeds[spec.name] = np.zeros_like(adapted[spec.name])
        elif spec.role is Role.MULTI_HOT:
            bag = adapted[spec.name].copy()
            bag[:, 0] = 1.0
            feeds[spec.name] = bag
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
            raise ImportFailure(f"output '{name}' is not finite for unknown ids")
    return float(np.max(errors))  # NaN, if any, comes through: it must not pass for agreement
