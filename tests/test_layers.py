"""Layers: forward values and every backward pass against finite differences (float64)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.gradcheck import assert_gradient, numeric_gradient
from training.layers import (
    Dense,
    Dropout,
    Embedding,
    ReLU,
    RowGroups,
    SparseRows,
    accumulate_rows,
    sigmoid,
)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_dense_forward_is_affine(rng: np.random.Generator) -> None:
    params = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
    x = rng.normal(size=(4, 5))
    np.testing.assert_allclose(Dense("W", "b").forward(params, x), x @ params["W"] + params["b"])


def test_dense_gradients(rng: np.random.Generator) -> None:
    layer = Dense("W", "b")
    params = {"W": rng.normal(size=(5, 3)), "b": rng.normal(size=3)}
    x = rng.normal(size=(4, 5))
    upstream = rng.normal(size=(4, 3))

    def loss() -> float:
        return float(np.sum(upstream * layer.forward(params, x)))

    dx, dweight, dbias = layer.backward(params, x, upstream)
    assert_gradient(dx, numeric_gradient(loss, x), "x")
    assert_gradient(dweight, numeric_gradient(loss, params["W"]), "W")
    assert_gradient(dbias, numeric_gradient(loss, params["b"]), "b")


def test_dense_keeps_float32(rng: np.random.Generator) -> None:
    layer = Dense("W", "b")
    params = {
        "W": rng.normal(size=(5, 3)).astype(np.float32),
        "b": rng.normal(size=3).astype(np.float32),
    }
    x = rng.normal(size=(4, 5)).astype(np.float32)
    out = layer.forward(params, x)
    grads = layer.backward(params, x, np.ones_like(out))
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)


def test_relu_forward_and_gradient(rng: np.random.Generator) -> None:
    x = rng.normal(size=(6, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    upstream = rng.normal(size=(6, 4))
    out, mask = ReLU.forward(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))

    def loss() -> float:
        return float(np.sum(upstream * ReLU.forward(x)[0]))

    assert_gradient(ReLU.backward(mask, upstream), numeric_gradient(loss, x), "x")


def test_dropout_gradient_with_fixed_mask(rng: np.random.Generator) -> None:
    layer = Dropout(0.3)
    x = rng.normal(size=(8, 5))
    upstream = rng.normal(size=(8, 5))

    def loss() -> float:
        return float(np.sum(upstream * layer.forward(x, np.random.default_rng(3))[0]))

    _, mask = layer.forward(x, np.random.default_rng(3))
    assert_gradient(Dropout.backward(mask, upstream), numeric_gradient(loss, x), "x")


def test_dropout_mask_keeps_expected_share_and_scales(rng: np.random.Generator) -> None:
    layer = Dropout(0.25)
    out, mask = layer.forward(np.ones((200, 100), dtype=np.float32), rng)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.unique(mask), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs((mask > 0).mean() - 0.75) < 0.02
    assert abs(out.mean() - 1.0) < 0.03  # inverted dropout preserves the expectation


def test_dropout_rate_zero_is_identity_and_bad_rates_fail(rng: np.random.Generator) -> None:
    x = rng.normal(size=(3, 4))
    np.testing.assert_array_equal(Dropout(0.0).forward(x, rng)[0], x)
    for rate in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout rate"):
            Dropout(rate)


def test_embedding_gradient_with_repeated_rows(rng: np.random.Generator) -> None:
    layer = Embedding("E")
    params = {"E": rng.normal(size=(7, 3))}
    rows = np.array([2, 5, 2, 0, 6, 2, 5])
    upstream = rng.normal(size=(rows.size, 3))

    def loss() -> float:
        return float(np.sum(upstream * layer.forward(params, rows)))

    np.testing.assert_array_equal(layer.forward(params, rows), params["E"][rows])
    sparse = layer.backward(rows, upstream)
    np.testing.assert_array_equal(sparse.rows, [0, 2, 5, 6])
    assert_gradient(sparse.to_dense(7), numeric_gradient(loss, params["E"]), "E")


@pytest.mark.parametrize("n_rows", [5, 50, 5000])  # mostly repeated rows ... mostly distinct
def test_accumulate_rows_matches_add_at(rng: np.random.Generator, n_rows: int) -> None:
    rows = rng.integers(0, n_rows, 300)
    grad = rng.normal(size=(300, 4)).astype(np.float32)
    expected = np.zeros((n_rows, 4), dtype=np.float64)
    np.add.at(expected, rows, grad)
    sparse = accumulate_rows(RowGroups.of(rows), grad)
    assert sparse.values.dtype == np.float32
    np.testing.assert_array_equal(sparse.rows, np.unique(rows))
    np.testing.assert_allclose(sparse.to_dense(n_rows), expected, rtol=1e-5, atol=1e-6)


def test_accumulate_rows_without_repeats_is_a_permutation(rng: np.random.Generator) -> None:
    rows = rng.permutation(40)[:10]
    grad = rng.normal(size=(10, 2))
    sparse = accumulate_rows(RowGroups.of(rows), grad)
    np.testing.assert_array_equal(sparse.rows, np.sort(rows))
    np.testing.assert_array_equal(sparse.values, grad[np.argsort(rows)])


def test_sparse_rows_to_dense_zero_elsewhere() -> None:
    sparse = SparseRows(np.array([1, 3]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(sparse.to_dense(4), [[0, 0], [1, 2], [0, 0], [3, 4]])


def test_sigmoid_matches_definition_and_never_overflows() -> None:
    x = np.linspace(-30, 30, 61)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-12)
    extreme = np.array([-1e4, -100.0, 0.0, 100.0, 1e4], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sigmoid(extreme)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[[0, 2, 3, 4]], [0.0, 0.5, 1.0, 1.0])
    assert 0.0 < out[1] < 1e-40
