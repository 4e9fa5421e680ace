"""The exported ONNX graph reproduces the NumPy models' predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from training.export import IR_VERSION, OPSET, export_onnx, onnx_parity
from training.models import ModelConfig, build_model


@pytest.mark.parametrize("kind", ["mlp", "neumf"])
@pytest.mark.parametrize("tower", [(8,), (16, 8, 4)])
def test_onnx_runtime_matches_predict(tmp_path: Path, kind: str, tower: tuple[int, ...]) -> None:
    config = ModelConfig(kind=kind, embedding_dim=6, tower=tower, gmf_dim=5, dropout=0.2)  # type: ignore[arg-type]
    model = build_model(config, 30, 25, seed=1)
    # Every parameter (biases and unknown-id rows included) gets values that spread the scores.
    rng = np.random.default_rng(0)
    for name, value in model.params.items():
        fan_in = 1 if name.endswith("emb") or name.startswith("b") else value.shape[0]
        value[...] = rng.normal(0.0, 1.5 / np.sqrt(fan_in), value.shape)

    path = tmp_path / "model.onnx"
    export_onnx(model.params, kind, path)
    loaded = onnx.load(str(path))
    assert loaded.ir_version == IR_VERSION
    assert loaded.opset_import[0].version == OPSET

    users = np.concatenate([[0, 0, 29], rng.integers(0, 30, 2000)])  # row 0: the unknown id
    items = np.concatenate([[0, 24, 0], rng.integers(0, 25, 2000)])
    scores = model.predict(users, items)
    assert scores.std() > 0.01  # a spread of scores, not a constant
    assert onnx_parity(path, model.predict, users, items) <= 1e-5
