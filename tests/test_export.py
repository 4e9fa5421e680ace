"""The exported ONNX graph reproduces the NumPy models' predictions, through the signature."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from modelrepo import two_id_signature
from training.export import IR_VERSION, OPSET, export_onnx, model_bytes, onnx_parity
from training.models import ModelConfig, build_model, kind_names


@pytest.mark.parametrize("kind", kind_names())
@pytest.mark.parametrize("tower", [(8,), (16, 8, 4)])
def test_onnx_runtime_matches_predict(tmp_path: Path, kind: str, tower: tuple[int, ...]) -> None:
    config = ModelConfig(kind=kind, embedding_dim=6, tower=tower, gmf_dim=5, dropout=0.2)
    model = build_model(config, 30, 25, seed=1)
    # Every parameter (biases and unknown-id rows included) gets values that spread the scores.
    rng = np.random.default_rng(0)
    for name, value in model.params.items():
        fan_in = 1 if name.endswith("emb") or name.startswith("b") else value.shape[0]
        value[...] = rng.normal(0.0, 1.5 / np.sqrt(fan_in), value.shape)

    path = tmp_path / "graph.onnx"
    export_onnx(model.params, kind, path)
    graph = path.read_bytes()
    assert graph == model_bytes(model.params, kind)
    loaded = onnx.load_from_string(graph)
    assert loaded.ir_version == IR_VERSION
    assert loaded.opset_import[0].version == OPSET

    # The graph's inputs and outputs are the signature's: the two-id one, rows of the tables.
    signature = model.signature
    assert signature == two_id_signature(30, 25)
    assert [i.name for i in loaded.graph.input] == [spec.name for spec in signature.inputs]
    assert [o.name for o in loaded.graph.output] == [signature.score]

    users = np.concatenate([[0, 0, 29], rng.integers(0, 30, 2000)])  # row 0: the unknown id
    items = np.concatenate([[0, 24, 0], rng.integers(0, 25, 2000)])
    scores = model.predict(users, items)
    assert scores.std() > 0.01  # a spread of scores, not a constant
    assert onnx_parity(graph, model.predict, users, items, signature) <= 1e-5
    # A wrong model is caught: the parity figure is not vacuous.
    model.params["b_out"] += 1.0
    assert onnx_parity(graph, model.predict, users, items, signature) > 1e-3


def test_unknown_kind_is_refused() -> None:
    params = build_model(ModelConfig(), 3, 3, seed=0).params
    with pytest.raises(ValueError, match="unknown model kind 'gmf'"):
        model_bytes(params, "gmf")
