"""NCF-MLP and NeuMF: every parameter's gradient, initialisation, determinism, prediction."""

from __future__ import annotations

import numpy as np
import pytest

from tests.gradcheck import assert_gradient, numeric_gradient
from training.layers import SparseRows, sigmoid
from training.losses import bce_with_logits
from training.models import (
    NCFMLP,
    Model,
    ModelConfig,
    NeuMF,
    base,
    build_model,
    kind_names,
    model_class,
    register,
)
from training.optim import Adam, train_step

N_USER_ROWS, N_ITEM_ROWS = 7, 6
USERS = np.array([1, 2, 6, 0, 2, 3, 1, 5, 2, 4])
ITEMS = np.array([3, 1, 5, 2, 0, 3, 4, 1, 3, 5])
CONFIGS = {
    "mlp": ModelConfig(kind="mlp", embedding_dim=3, tower=(5, 4)),
    "neumf": ModelConfig(kind="neumf", embedding_dim=3, tower=(5, 4), gmf_dim=2),
    "mf": ModelConfig(kind="mf", embedding_dim=3, tower=(5, 4)),
}


def float64_model(config: ModelConfig) -> Model:
    """A small model with float64 copies of its parameters and embeddings scaled up.

    The NCF initialisation (std 0.01) makes gradients too small to compare meaningfully.
    """
    model = build_model(config, N_USER_ROWS, N_ITEM_ROWS, seed=3)
    rng = np.random.default_rng(4)
    model.params = {name: value.astype(np.float64) for name, value in model.params.items()}
    for name, value in model.params.items():
        if name.endswith("emb"):
            value[:] = rng.normal(0, 1, value.shape)
        elif name.startswith("b"):
            value[:] = rng.normal(0, 0.3, value.shape)
    return model


@pytest.mark.parametrize("kind", ["mlp", "neumf", "mf"])
@pytest.mark.parametrize(("l2", "dropout"), [(0.0, 0.0), (0.05, 0.0), (0.0, 0.4), (0.1, 0.3)])
def test_every_parameter_gradient_matches_finite_differences(
    kind: str, l2: float, dropout: float
) -> None:
    config = ModelConfig(**{**CONFIGS[kind].__dict__, "l2": l2, "dropout": dropout})
    model = float64_model(config)
    upstream = np.random.default_rng(5).normal(size=USERS.size)

    def objective() -> float:
        # The same seed draws the same dropout masks on every evaluation.
        logits, cache = model.forward(USERS, ITEMS, train=True, rng=np.random.default_rng(9))
        return float(np.dot(upstream, logits)) + model.regularization(cache)

    _, cache = model.forward(USERS, ITEMS, train=True, rng=np.random.default_rng(9))
    grads = model.backward(cache, upstream)
    assert set(grads) == set(model.params)
    for name, param in model.params.items():
        grad = grads[name]
        if isinstance(grad, SparseRows):
            lookups = USERS if "user" in name else ITEMS
            np.testing.assert_array_equal(grad.rows, np.unique(lookups))
            grad = grad.to_dense(param.shape[0])
        assert grad.shape == param.shape, name
        assert_gradient(grad, numeric_gradient(objective, param), name)


@pytest.mark.parametrize("kind", ["mlp", "neumf"])
def test_loss_gradient_through_bce(kind: str) -> None:
    """The training objective (BCE + L2), end to end, against finite differences."""
    config = ModelConfig(**{**CONFIGS[kind].__dict__, "l2": 0.02, "dropout": 0.2})
    model = float64_model(config)
    labels = (np.arange(USERS.size) % 3 == 0).astype(np.float64)

    def objective() -> float:
        logits, cache = model.forward(USERS, ITEMS, train=True, rng=np.random.default_rng(1))
        return bce_with_logits(logits, labels)[0] + model.regularization(cache)

    logits, cache = model.forward(USERS, ITEMS, train=True, rng=np.random.default_rng(1))
    grads = model.backward(cache, bce_with_logits(logits, labels)[1])
    for name in ("W0", "w_out", "b_out", "item_emb" if kind == "mlp" else "gmf_item_emb"):
        grad = grads[name]
        dense = grad.to_dense(model.params[name].shape[0]) if isinstance(grad, SparseRows) else grad
        assert_gradient(dense, numeric_gradient(objective, model.params[name]), name)


@pytest.mark.parametrize("kind", ["mlp", "neumf", "mf"])
def test_float32_forward_and_gradients_agree_with_float64(kind: str) -> None:
    model = build_model(CONFIGS[kind], N_USER_ROWS, N_ITEM_ROWS, seed=0)
    logits32, cache32 = model.forward(USERS, ITEMS)
    grads32 = model.backward(cache32, np.ones(USERS.size, dtype=np.float32))
    reference = build_model(CONFIGS[kind], N_USER_ROWS, N_ITEM_ROWS, seed=0)
    reference.params = {k: v.astype(np.float64) for k, v in reference.params.items()}
    logits64, cache64 = reference.forward(USERS, ITEMS)
    grads64 = reference.backward(cache64, np.ones(USERS.size))
    assert logits32.dtype == np.float32
    np.testing.assert_allclose(logits32, logits64, rtol=1e-5, atol=1e-6)
    for name, grad in grads32.items():
        values = grad.values if isinstance(grad, SparseRows) else grad
        other = grads64[name]
        expected = other.values if isinstance(other, SparseRows) else other
        assert values.dtype == np.float32, name
        np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-6, err_msg=name)


TOWER_SHAPES = {"W0": (16, 12), "b0": (12,), "W1": (12, 6), "b1": (6,), "b_out": (1,)}


@pytest.mark.parametrize(
    ("kind", "model_type", "shapes"),
    [
        ("mlp", NCFMLP, {"user_emb": (11, 8), "item_emb": (9, 8), "w_out": (6, 1)}),
        (
            "neumf",
            NeuMF,
            {
                "gmf_user_emb": (11, 4),
                "gmf_item_emb": (9, 4),
                "mlp_user_emb": (11, 8),
                "mlp_item_emb": (9, 8),
                "w_out": (10, 1),
            },
        ),
    ],
)
def test_parameter_names_and_shapes(
    kind: str, model_type: type[Model], shapes: dict[str, tuple[int, ...]]
) -> None:
    config = ModelConfig(kind=kind, embedding_dim=8, tower=(12, 6), gmf_dim=4)
    model = build_model(config, 11, 9, seed=0)
    assert type(model) is model_type
    assert {name: p.shape for name, p in model.params.items()} == {**shapes, **TOWER_SHAPES}
    assert all(p.dtype == np.float32 for p in model.params.values())


def test_registry_holds_the_kinds_by_name() -> None:
    assert kind_names() == ("dlrm", "mf", "mlp", "neumf")
    assert (model_class("mlp"), model_class("neumf")) == (NCFMLP, NeuMF)
    assert (NCFMLP.kind, NeuMF.kind, model_class("dlrm").kind) == ("mlp", "neumf", "dlrm")
    expected = "expected 'dlrm' or 'mf' or 'mlp' or 'neumf'"
    with pytest.raises(ValueError, match=f"unknown model kind 'gmf'; {expected}"):
        model_class("gmf")
    with pytest.raises(ValueError, match="registered twice"):
        register("mlp")(NCFMLP)
    assert model_class("mlp") is NCFMLP


@pytest.mark.parametrize("kind", ["mlp", "neumf", "mf"])
def test_initialisation(kind: str) -> None:
    model = build_model(ModelConfig(kind=kind), 2000, 1500, seed=0)
    for name, value in model.params.items():
        if name.endswith("emb"):
            assert not value[0].any(), f"{name}: unknown-id row starts at zero"
            assert value[1:].std() == pytest.approx(0.01, rel=0.05)
        elif name.startswith("b"):
            assert not value.any()
        elif name.startswith("W"):
            assert value.std() == pytest.approx(np.sqrt(2 / value.shape[0]), rel=0.1)


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    config = ModelConfig(kind="neumf", embedding_dim=4, tower=(8, 4))
    first = build_model(config, 30, 20, seed=11).params
    again = build_model(config, 30, 20, seed=11).params
    other = build_model(config, 30, 20, seed=12).params
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["W0"], other["W0"])
    assert not np.array_equal(first["mlp_user_emb"], other["mlp_user_emb"])


@pytest.mark.parametrize("kind", ["mlp", "neumf", "mf"])
def test_training_is_deterministic_by_seed(kind: str) -> None:
    config = ModelConfig(**{**CONFIGS[kind].__dict__, "dropout": 0.2, "l2": 1e-3})
    rng = np.random.default_rng(0)
    labels = (rng.random(USERS.size) < 0.5).astype(np.float32)

    def train() -> dict[str, np.ndarray]:
        model = build_model(config, N_USER_ROWS, N_ITEM_ROWS, seed=1)
        optimizer = Adam(model.params, lr=0.01)
        step_rng = np.random.default_rng(2)
        for _ in range(5):
            train_step(model, optimizer, USERS, ITEMS, labels, step_rng)
        return model.params

    first, second = train(), train()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.parametrize("kind", ["mlp", "neumf", "mf"])
def test_predict_is_sigmoid_of_inference_logits_and_chunked(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = ModelConfig(**{**CONFIGS[kind].__dict__, "dropout": 0.5})
    model = build_model(config, N_USER_ROWS, N_ITEM_ROWS, seed=0)
    rng = np.random.default_rng(0)
    users = rng.integers(0, N_USER_ROWS, 1000)
    items = rng.integers(0, N_ITEM_ROWS, 1000)
    whole = model.predict(users, items)
    logits, _ = model.forward(users, items)
    assert whole.dtype == np.float32 and whole.shape == (1000,)
    np.testing.assert_array_equal(whole, sigmoid(logits))
    monkeypatch.setattr(base, "PREDICT_CHUNK_ROWS", 64)
    np.testing.assert_array_equal(model.predict(users, items), whole)  # no dropout, any chunking
    assert model.predict(users[:0], items[:0]).shape == (0,)


def test_training_dropout_differs_from_inference() -> None:
    config = ModelConfig(kind="mlp", embedding_dim=3, tower=(5, 4), dropout=0.5)
    model = build_model(config, 7, 6, seed=0)
    inference, _ = model.forward(USERS, ITEMS)
    trained, _ = model.forward(USERS, ITEMS, train=True, rng=np.random.default_rng(0))
    assert not np.array_equal(inference, trained)
    with pytest.raises(ValueError, match="needs an rng"):
        model.forward(USERS, ITEMS, train=True)


def test_rows_are_checked() -> None:
    model = build_model(CONFIGS["mlp"], N_USER_ROWS, N_ITEM_ROWS, seed=0)
    with pytest.raises(ValueError, match="user rows must lie in"):
        model.forward(np.array([N_USER_ROWS]), np.array([0]))
    with pytest.raises(ValueError, match="item rows must lie in"):
        model.predict(np.array([0]), np.array([-1]))
    with pytest.raises(ValueError, match="differ in shape"):
        model.forward(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="integer"):
        model.forward(np.array([0.0]), np.array([0]))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "gmf"}, "unknown model kind"),
        ({"embedding_dim": 0}, "embedding sizes"),
        ({"tower": ()}, "tower"),
        ({"tower": (8, 0)}, "tower"),
        ({"l2": -1.0}, "l2"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_config_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["mlp", "neumf", "mf"])
def test_training_learns_a_planted_preference(kind: str) -> None:
    """Users 1-20 like even items, users 21-40 odd ones: Adam must fit it well past chance."""
    config = ModelConfig(kind=kind, embedding_dim=8, tower=(16, 8), gmf_dim=8)
    model = build_model(config, 41, 31, seed=0)
    optimizer = Adam(model.params, lr=0.01)
    rng = np.random.default_rng(0)
    users_all = np.repeat(np.arange(1, 41), 30)
    items_all = np.tile(np.arange(1, 31), 40)
    labels_all = ((users_all <= 20) == (items_all % 2 == 0)).astype(np.float32)
    for _ in range(300):
        batch = rng.integers(0, users_all.size, 128)
        train_step(model, optimizer, users_all[batch], items_all[batch], labels_all[batch], rng)
    scores = model.predict(users_all, items_all)
    loss, _ = bce_with_logits(np.log(scores / (1 - scores)), labels_all)
    assert loss < 0.1
    assert ((scores > 0.5) == (labels_all > 0.5)).mean() > 0.99


def test_mf_starts_as_the_biased_dot_product_without_a_tower() -> None:
    """``w_out`` ones and zero biases: the logit is ``<p_u, q_i>``; no tower weights exist."""
    config = ModelConfig(kind="mf", embedding_dim=4, tower=(12, 6), gmf_dim=7)
    model = build_model(config, 11, 9, seed=0)
    shapes = {name: p.shape for name, p in model.params.items()}
    assert shapes == {
        "user_emb": (11, 4),
        "item_emb": (9, 4),
        "user_bias": (11, 1),
        "item_bias": (9, 1),
        "w_out": (6, 1),
        "b_out": (1,),
    }
    np.testing.assert_array_equal(model.params["w_out"], 1.0)
    assert not model.params["user_bias"].any() and not model.params["item_bias"].any()
    users, items = np.array([1, 2, 10]), np.array([3, 8, 1])
    logits, _ = model.forward(users, items)
    expected = (model.params["user_emb"][users] * model.params["item_emb"][items]).sum(axis=1)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-9)


def test_mf_biases_carry_popularity() -> None:
    """Trained on one popular item and users with nothing else in common, the item bias ranks it
    first for a user the model never saw (row 0: no factors, biases only)."""
    model = build_model(ModelConfig(kind="mf", embedding_dim=4), 21, 6, seed=0)
    optimizer = Adam(model.params, lr=0.05)
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, 21), 5)
    items = np.tile(np.arange(1, 6), 20)
    labels = ((items == 3) | (rng.random(items.size) < 0.1)).astype(np.float32)
    for _ in range(200):
        train_step(model, optimizer, users, items, labels, rng)
    assert model.params["item_bias"][3, 0] > model.params["item_bias"][[1, 2, 4, 5], 0].max()
    scores = model.predict(np.zeros(5, np.int64), np.arange(1, 6))
    assert int(np.argmax(scores)) == 2
