"""Optimizers against reference formulas; lazy sparse updates; the training step."""

from __future__ import annotations

import numpy as np
import pytest

from training.layers import Grads, SparseRows
from training.losses import bce_with_logits
from training.models import ModelConfig, build_model
from training.optim import SGD, Adam, train_step


def reference_adam(
    param: np.ndarray,
    grads: list[np.ndarray],
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> np.ndarray:
    """Textbook Adam (as PyTorch writes it) in float64."""
    p = param.astype(np.float64)
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat = m / (1 - betas[0] ** t)
        v_hat = v / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def test_adam_dense_matches_reference() -> None:
    rng = np.random.default_rng(0)
    start = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    params = {name: value.copy() for name, value in start.items()}
    history = {
        name: [rng.normal(size=value.shape) for _ in range(6)] for name, value in start.items()
    }
    optimizer = Adam(params, lr=0.05, betas=(0.8, 0.99))
    for step in range(6):
        optimizer.step({name: history[name][step] for name in start})
    for name in start:
        expected = reference_adam(start[name], history[name], 0.05, (0.8, 0.99))
        np.testing.assert_allclose(params[name], expected, rtol=1e-10, err_msg=name)


def test_adam_float32_stays_float32_and_close_to_reference() -> None:
    rng = np.random.default_rng(1)
    start = rng.normal(size=(5, 2)).astype(np.float32)
    params = {"W": start.copy()}
    grads = [rng.normal(size=(5, 2)).astype(np.float32) for _ in range(4)]
    optimizer = Adam(params, lr=0.01)
    for g in grads:
        optimizer.step({"W": g})
    assert params["W"].dtype == np.float32
    np.testing.assert_allclose(params["W"], reference_adam(start, grads, 0.01), rtol=1e-5)


def test_lazy_adam_equals_dense_adam_when_every_row_is_touched() -> None:
    rng = np.random.default_rng(2)
    table = rng.normal(size=(6, 3))
    sparse_params = {"E": table.copy()}
    dense_params = {"E": table.copy()}
    sparse_opt, dense_opt = Adam(sparse_params, lr=0.1), Adam(dense_params, lr=0.1)
    for _ in range(4):
        g = rng.normal(size=(6, 3))
        sparse_opt.step({"E": SparseRows(np.arange(6), g)})
        dense_opt.step({"E": g})
    np.testing.assert_allclose(sparse_params["E"], dense_params["E"], rtol=1e-12)


def test_lazy_adam_moves_and_decays_only_touched_rows() -> None:
    rng = np.random.default_rng(3)
    table = rng.normal(size=(5, 2))
    params = {"E": table.copy()}
    optimizer = Adam(params, lr=0.1)
    g1, g2, g3 = (rng.normal(size=(2, 2)) for _ in range(3))
    optimizer.step({"E": SparseRows(np.array([1, 3]), g1)})
    optimizer.step({"E": SparseRows(np.array([1, 3]), g2)})
    after_two = params["E"].copy()
    optimizer.step({"E": SparseRows(np.array([0, 3]), g3)})
    final = params["E"]
    # Untouched rows never move; row 1 keeps its place in step 3 despite its momentum.
    np.testing.assert_array_equal(final[[2, 4]], table[[2, 4]])
    np.testing.assert_array_equal(final[1], after_two[1])
    np.testing.assert_allclose(final[3], reference_adam(table[3], [g1[1], g2[1], g3[1]], 0.1))
    # Row 0 first seen at step 3: zero moments, bias correction of the global step 3.
    m = 0.1 * g3[0]
    v = 0.001 * g3[0] ** 2
    expected = table[0] - 0.1 * (m / (1 - 0.9**3)) / (np.sqrt(v / (1 - 0.999**3)) + 1e-8)
    np.testing.assert_allclose(final[0], expected, rtol=1e-10)


def test_adam_follows_a_parameter_rebound_after_packing() -> None:
    rng = np.random.default_rng(4)
    params = {"W": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    optimizer = Adam(params, lr=0.01)
    optimizer.step({"W": np.ones((3, 2)), "b": np.ones(2)})
    loaded = np.full((3, 2), 5.0)
    params["W"] = loaded
    optimizer.step({"W": np.ones((3, 2)), "b": np.ones(2)})
    # The second step starts from the loaded values, with the moments of the first step.
    expected_step = reference_adam(np.zeros((3, 2)), [np.ones((3, 2))] * 2, 0.01)
    expected_step -= reference_adam(np.zeros((3, 2)), [np.ones((3, 2))], 0.01)
    np.testing.assert_allclose(params["W"], 5.0 + expected_step, rtol=1e-10)
    params["W"] = np.zeros((2, 2))
    with pytest.raises(ValueError, match="changed shape"):
        optimizer.step({"W": np.ones((2, 2)), "b": np.ones(2)})


def test_adam_rejects_a_different_set_of_dense_gradients() -> None:
    params = {"W": np.zeros((2, 2)), "b": np.zeros(2)}
    optimizer = Adam(params)
    optimizer.step({"W": np.ones((2, 2)), "b": np.ones(2)})
    with pytest.raises(ValueError, match="differ"):
        optimizer.step({"W": np.ones((2, 2))})


def test_sgd_dense_and_sparse() -> None:
    params = {"W": np.ones((2, 2)), "E": np.ones((4, 2))}
    SGD(params, lr=0.5).step(
        {"W": np.full((2, 2), 2.0), "E": SparseRows(np.array([1, 2]), np.full((2, 2), 4.0))}
    )
    np.testing.assert_array_equal(params["W"], np.zeros((2, 2)))
    np.testing.assert_array_equal(params["E"][:, 0], [1.0, -1.0, -1.0, 1.0])


def test_sgd_momentum_matches_heavy_ball() -> None:
    rng = np.random.default_rng(5)
    grads = [rng.normal(size=3) for _ in range(4)]
    params = {"w": np.zeros(3), "E": np.zeros((3, 3))}
    optimizer = SGD(params, lr=0.1, momentum=0.9)
    for g in grads:
        optimizer.step({"w": g, "E": SparseRows(np.array([2]), g[None, :])})
    velocity = np.zeros(3)
    expected = np.zeros(3)
    for g in grads:
        velocity = 0.9 * velocity + g
        expected -= 0.1 * velocity
    np.testing.assert_allclose(params["w"], expected, rtol=1e-12)
    np.testing.assert_allclose(params["E"][2], expected, rtol=1e-12)
    assert not params["E"][:2].any()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: Adam(p, lr=0.0),
        lambda p: Adam(p, betas=(0.9, 1.0)),
        lambda p: SGD(p, lr=-1.0),
        lambda p: SGD(p, lr=0.1, momentum=1.0),
    ],
)
def test_bad_hyper_parameters_fail(make: object) -> None:
    with pytest.raises(ValueError):
        make({"w": np.zeros(1)})  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["mlp", "neumf"])
def test_train_step_applies_loss_and_l2_gradient(kind: str) -> None:
    """One SGD step moves each parameter by -lr times the gradient of BCE + L2."""
    config = ModelConfig(kind=kind, embedding_dim=4, tower=(6, 3), gmf_dim=3, l2=0.1)  # type: ignore[arg-type]
    model = build_model(config, 9, 8, seed=0)
    users = np.array([1, 2, 3, 1, 8])
    items = np.array([4, 4, 1, 7, 2])
    labels = np.array([1.0, 0.0, 1.0, 0.0, 1.0], dtype=np.float32)
    before = {name: value.copy() for name, value in model.params.items()}
    logits, cache = model.forward(users, items)
    bce, dlogits = bce_with_logits(logits, labels)
    expected_loss = bce + model.regularization(cache)
    grads: Grads = model.backward(cache, dlogits)

    loss = train_step(
        model, SGD(model.params, lr=0.5), users, items, labels, np.random.default_rng()
    )
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert model.regularization(cache) > 0.0
    for name, value in model.params.items():
        grad = grads[name]
        dense = grad.to_dense(value.shape[0]) if isinstance(grad, SparseRows) else grad
        np.testing.assert_allclose(value, before[name] - 0.5 * dense, rtol=1e-5, atol=1e-7)
