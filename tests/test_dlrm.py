"""The dlrm kind: every parameter's gradient, feature gathering, bags, id dropout, checks, and a
planted feature effect that serves a cold-start user from its features."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from modelrepo import Role, Source
from tests.dlrm_tools import (
    AGE,
    CONFIG,
    DEVICE,
    FEATURE_SETS,
    GENRES,
    ITEMS,
    N_ITEM_ROWS,
    N_USER_ROWS,
    OCCUPATION,
    USERS,
    dlrm,
    spread,
    table,
)
from tests.gradcheck import assert_gradient, numeric_gradient
from training.cli import build_parser, config_from_args
from training.layers import Grads, SparseRows, sigmoid
from training.models import DLRM, ForwardCache, ModelConfig, SideFeature, base, build_model
from training.models.dlrm import DLRMCache
from training.models.dlrm_graph import feature_table
from training.optim import Adam, train_step


def dense_gradient(grad: np.ndarray | SparseRows, param: np.ndarray) -> np.ndarray:
    """A parameter's gradient as a full array of its shape."""
    full = grad.to_dense(param.shape[0]) if isinstance(grad, SparseRows) else grad
    assert full.shape == param.shape
    return full


def checked_gradients(
    model: DLRM, run: Callable[[], tuple[np.ndarray, ForwardCache]], names: Sequence[str] = ()
) -> tuple[Grads, DLRMCache]:
    """The gradients of ``upstream . logits + regularization`` of the pass ``run`` makes, each of
    ``names`` (default: every parameter) checked against finite differences."""
    upstream = np.random.default_rng(5).normal(size=USERS.size)

    def objective() -> float:
        logits, cache = run()
        return float(np.dot(upstream, logits)) + model.regularization(cache)

    cache = run()[1]
    assert isinstance(cache, DLRMCache)
    grads = model.backward(cache, upstream)
    for name in names or list(model.params):
        param = model.params[name]
        numeric = numeric_gradient(objective, param)
        assert_gradient(dense_gradient(grads[name], param), numeric, name)
    return grads, cache


@pytest.mark.parametrize("features", list(FEATURE_SETS))
@pytest.mark.parametrize(
    ("l2", "dropout", "id_dropout"), [(0.0, 0.0, 0.0), (0.05, 0.3, 0.0), (0.02, 0.2, 0.4)]
)
def test_every_parameter_gradient_matches_finite_differences(
    features: str, l2: float, dropout: float, id_dropout: float
) -> None:
    config = dataclasses.replace(CONFIG, l2=l2, dropout=dropout, id_dropout=id_dropout)
    model = spread(dlrm(FEATURE_SETS[features], config))
    # The same seed draws the same id-dropout and dropout masks on every evaluation.
    grads, cache = checked_gradients(
        model, lambda: model.forward(USERS, ITEMS, train=True, rng=np.random.default_rng(9))
    )
    assert set(grads) == set(model.params)
    # Embedding gradients are sparse over the rows looked up (a bag's non-zero entries; a bag of
    # the user's items reads the item table, whose rows are then the items' and the bag's).
    looked_up = {"user_emb": cache.users, "item_emb": cache.items}
    looked_up |= {"user_bias": cache.users, "item_bias": cache.items}
    for feature in model.features:
        rows = cache.feeds[feature.name]
        table = feature_table(feature.input_spec())
        if feature.role is Role.MULTI_HOT:
            rows = rows[rows != 0]
        if feature.role is not Role.DENSE:
            looked_up[table] = np.concatenate([looked_up.get(table, rows[:0]), rows])
    if features in ("history", "all_and_history"):
        assert "user_recent_items_emb" not in model.params  # its rows are item_emb's
    for name, rows in looked_up.items():
        grad = grads[name]
        assert isinstance(grad, SparseRows)
        np.testing.assert_array_equal(grad.rows, np.unique(rows), err_msg=name)


def test_gradient_of_explicit_inputs_with_cold_rows_and_empty_bags() -> None:
    """forward_inputs (what a cold-start user goes through) has the same backward."""
    model = spread(dlrm(FEATURE_SETS["all"], dataclasses.replace(CONFIG, l2=0.01)))
    feeds = model.inputs_for(USERS, ITEMS)
    feeds["user"] = np.zeros_like(USERS)  # every user unknown, its features kept
    feeds["item_genres"] = np.array([[0, 0, 0], [4, 0, 0], [1, 2, 3], [0, 0, 0]] * 3)
    names = ("user_emb", "item_genres_emb", "W_bottom0", "W0")
    grads, _ = checked_gradients(model, lambda: model.forward_inputs(feeds), names)
    user_grad = grads["user_emb"]
    assert isinstance(user_grad, SparseRows) and list(user_grad.rows) == [0]


def test_float32_forward_and_gradients_agree_with_float64() -> None:
    model = spread(dlrm(FEATURE_SETS["all"]), dtype=np.float32)
    reference = dlrm(FEATURE_SETS["all"])
    reference.params.update({k: v.astype(np.float64) for k, v in model.params.items()})
    logits32, cache32 = model.forward(USERS, ITEMS)
    logits64, cache64 = reference.forward(USERS, ITEMS)
    assert logits32.dtype == np.float32
    np.testing.assert_allclose(logits32, logits64, rtol=1e-5, atol=1e-5)
    grads32 = model.backward(cache32, np.ones(USERS.size, dtype=np.float32))
    grads64 = reference.backward(cache64, np.ones(USERS.size))
    for name, param in model.params.items():
        single = dense_gradient(grads32[name], param)
        assert single.dtype == np.float32, name
        double = dense_gradient(grads64[name], param)
        np.testing.assert_allclose(single, double, rtol=1e-4, atol=1e-5, err_msg=name)


def test_forward_gathers_each_rows_features_from_the_tables() -> None:
    model = spread(dlrm(FEATURE_SETS["all"]))
    feeds = model.inputs_for(USERS, ITEMS)
    assert list(feeds) == [spec.name for spec in model.signature.inputs]
    np.testing.assert_array_equal(feeds["user_occupation"], table(OCCUPATION)[USERS])
    np.testing.assert_array_equal(feeds["item_genres"], table(GENRES)[ITEMS])
    np.testing.assert_array_equal(feeds["user_age"], table(AGE)[USERS])
    by_rows, _ = model.forward(USERS, ITEMS)
    by_inputs, _ = model.forward_inputs(feeds)
    np.testing.assert_array_equal(by_rows, by_inputs)
    # A feature changes the score: the same ids with another occupation score otherwise.
    feeds["user_occupation"] = (feeds["user_occupation"] + 1) % 4
    assert not np.allclose(model.forward_inputs(feeds)[0], by_rows)


def test_a_cold_user_is_the_unknown_row_with_its_own_features() -> None:
    model = spread(dlrm(FEATURE_SETS["all"]))
    cold = model.predict_cold(USERS, ITEMS)
    feeds = model.inputs_for(USERS, ITEMS)
    feeds["user"] = np.zeros_like(USERS)
    np.testing.assert_array_equal(cold, model.predict_inputs(feeds))
    unknown_without_features = model.predict(np.zeros_like(USERS), ITEMS)
    assert not np.allclose(cold, unknown_without_features)
    assert not np.allclose(cold, model.predict(USERS, ITEMS))


def test_a_bag_is_the_mean_of_its_non_zero_rows() -> None:
    model = spread(dlrm((GENRES,)))
    feeds = model.inputs_for(np.ones(4, dtype=np.int64), np.ones(4, dtype=np.int64))
    feeds["item_genres"] = np.array([[1, 2, 0], [0, 2, 1], [2, 1, 1], [0, 0, 0]])
    _, cache = model.forward_inputs(feeds)
    assert isinstance(cache, DLRMCache) and cache.vectors is not None
    table = model.params["item_genres_emb"]
    bags = cache.vectors[:, 2]
    np.testing.assert_allclose(bags[0], (table[1] + table[2]) / 2)
    np.testing.assert_allclose(bags[1], bags[0])  # padding anywhere weighs nothing
    np.testing.assert_allclose(bags[2], (table[2] + 2 * table[1]) / 3)  # a repeat counts twice
    np.testing.assert_array_equal(bags[3], np.zeros(3))  # an empty bag, although row 0 is not 0


def test_id_dropout_replaces_ids_and_keeps_their_features() -> None:
    model = dlrm(FEATURE_SETS["all"], dataclasses.replace(CONFIG, id_dropout=0.5))
    users = np.arange(1, N_USER_ROWS).repeat(50)
    items = np.resize(np.arange(1, N_ITEM_ROWS), users.size)
    _, cache = model.forward(users, items, train=True, rng=np.random.default_rng(0))
    assert isinstance(cache, DLRMCache)
    dropped = cache.users == 0
    assert 0.4 < dropped.mean() < 0.6
    np.testing.assert_array_equal(cache.users[~dropped], users[~dropped])
    np.testing.assert_array_equal(cache.items, items)  # item ids are never dropped
    np.testing.assert_array_equal(cache.feeds["user_occupation"], table(OCCUPATION)[users])
    np.testing.assert_array_equal(cache.feeds["item_genres"], table(GENRES)[items])
    _, cache = model.forward(users, items)
    np.testing.assert_array_equal(cache.users, users)
    with pytest.raises(ValueError, match="needs an rng"):
        model.forward(users, items, train=True)


def test_parameters_signature_and_initialisation() -> None:
    model = build_model(dataclasses.replace(CONFIG, embedding_dim=8), 7, 6, 0, FEATURE_SETS["all"])
    shapes = {name: value.shape for name, value in model.params.items()}
    # Vectors: user, item, occupation, genres, bottom MLP -> the 8 values of their pairs'
    # products, after 8 dense values.
    # The output layer reads the tower's 4 outputs, then the MF head: 8 products, 2 biases.
    assert shapes == {
        "user_emb": (7, 8), "item_emb": (6, 8), "user_occupation_emb": (4, 8),
        "item_genres_emb": (5, 8), "W_bottom0": (3, 4), "b_bottom0": (4,), "W_bottom1": (4, 8),
        "b_bottom1": (8,), "W0": (16, 5), "b0": (5,), "W1": (5, 4), "b1": (4,),
        "user_bias": (7, 1), "item_bias": (6, 1), "w_out": (14, 1), "b_out": (1,),
    }  # fmt: skip
    for name, value in model.params.items():
        assert value.dtype == np.float32
        if name.endswith("_emb"):
            assert not value[0].any(), name
    assert not model.params["user_bias"].any() and not model.params["item_bias"].any()
    np.testing.assert_array_equal(model.params["w_out"][4:], np.ones((10, 1)))
    glorot = model.params["w_out"][:4]  # uniform within sqrt(6 / (fan-in + 1)), fan-in 4
    assert np.abs(glorot).max() <= np.sqrt(6 / 5) and len(np.unique(glorot)) == 4
    signature = model.signature
    assert [s.name for s in signature.inputs] == [
        "user", "item", "user_occupation", "user_age", "item_genres", "item_year",
    ]  # fmt: skip
    age = signature.input("user_age")
    assert (age.role, age.dtype, age.shape, age.mean, age.std) == (
        "dense", "FP32", (-1, 2), (35.0, 1990.0), (12.0, 8.0),
    )  # fmt: skip
    genres = signature.input("item_genres")
    assert (genres.role, genres.shape, genres.n_rows, genres.vocabulary, genres.table) == (
        "multi_hot", (-1, 3), 5, "vocab_item_genres.txt", "item_features.npz",
    )  # fmt: skip
    assert (genres.feature, genres.caller, signature.input("user_age").caller) == (
        "genres", "never", "may",
    )  # fmt: skip
    with pytest.raises(ValueError, match="take its signature from the model"):
        DLRM.signature_for(model.params)


def test_a_context_feature_defaults_when_scored_by_id() -> None:
    model = spread(dlrm((OCCUPATION, DEVICE)))
    feeds = model.inputs_for(USERS, ITEMS)
    np.testing.assert_array_equal(feeds["context_device"], np.zeros(USERS.size))
    assert model.signature.input("context_device").caller == "must"
    feeds["context_device"] = np.full(USERS.size, 2)
    assert not np.allclose(model.predict_inputs(feeds), model.predict(USERS, ITEMS))


def test_predict_inputs_is_sigmoid_of_the_logits_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    model = spread(dlrm(FEATURE_SETS["all"], dataclasses.replace(CONFIG, dropout=0.5)))
    rng = np.random.default_rng(0)
    feeds = model.inputs_for(rng.integers(0, N_USER_ROWS, 500), rng.integers(0, N_ITEM_ROWS, 500))
    whole = model.predict_inputs(feeds)
    assert whole.dtype == np.float32
    np.testing.assert_array_equal(whole, sigmoid(model.forward_inputs(feeds)[0]).astype(np.float32))
    monkeypatch.setattr(base, "PREDICT_CHUNK_ROWS", 64)
    np.testing.assert_array_equal(model.predict_inputs(feeds), whole)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"user_age": None}, r"takes the inputs"),
        ({"item_genres": np.zeros((len(USERS), 2), dtype=np.int64)}, "'item_genres' is int64"),
        ({"item_genres": np.full((len(USERS), 3), 5)}, r"'item_genres' holds rows outside \[0, 5"),
        ({"user_occupation": np.full(len(USERS), -1)}, "'user_occupation' holds rows outside"),
        ({"user_occupation": np.zeros(len(USERS))}, "'user_occupation' is float64"),
        ({"user_age": np.full((len(USERS), 2), np.nan)}, "'user_age' holds values that are not"),
        ({"item": np.full(len(USERS), N_ITEM_ROWS)}, "'item' holds rows outside"),
        ({"item": ITEMS[:3]}, r"'item' is int64\[3\], expected int64\[12\]"),
    ],
)
def test_explicit_inputs_are_checked(change: dict[str, np.ndarray | None], message: str) -> None:
    model = dlrm(FEATURE_SETS["all"])
    given = {**model.inputs_for(USERS, ITEMS), **change}
    feeds = {name: value for name, value in given.items() if value is not None}
    with pytest.raises(ValueError, match=message):
        model.predict_inputs(feeds)


def test_features_and_models_are_checked() -> None:
    with pytest.raises(ValueError, match="row 0"):
        SideFeature.categorical("occupation", Source.USER_TABLE, 4, np.array([1, 2]))
    with pytest.raises(ValueError, match="outside"):
        SideFeature.multi_hot("genres", Source.ITEM_TABLE, 3, np.array([[0, 0], [1, 3]]))
    with pytest.raises(ValueError, match="must hold integers"):
        SideFeature.categorical("occupation", Source.USER_TABLE, 4, np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="not finite"):
        SideFeature.dense("age", Source.USER_TABLE, np.array([[0.0], [np.inf]]), [1.0], [1.0])
    with pytest.raises(ValueError, match="'std' positive"):
        SideFeature.dense("age", Source.USER_TABLE, np.array([[0.0], [1.0]]), [1.0], [0.0])
    with pytest.raises(ValueError, match="context one has none"):
        SideFeature.categorical("device", Source.CONTEXT, 3, np.array([0, 1]))
    with pytest.raises(ValueError, match="not a feature's"):
        SideFeature.categorical("x", Source.USER, 3, np.array([0, 1]))
    with pytest.raises(ValueError, match="the table has 7 rows, the item_table ids 6"):
        dlrm((SideFeature.categorical("brand", Source.ITEM_TABLE, 3, np.zeros(7, np.int64)),))
    with pytest.raises(ValueError, match="not distinct"):
        dlrm((OCCUPATION, OCCUPATION))
    with pytest.raises(ValueError, match="do not fit the features"):
        DLRM(CONFIG, N_USER_ROWS, N_ITEM_ROWS, dlrm(()).params, (OCCUPATION,))
    with pytest.raises(ValueError, match="a mlp model takes no side features"):
        build_model(ModelConfig(kind="mlp"), N_USER_ROWS, N_ITEM_ROWS, 0, (OCCUPATION,))


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"bottom": (8, 0)}, "bottom"), ({"id_dropout": 1.0}, "id_dropout"),
     ({"id_dropout": -0.1}, "id_dropout")],
)  # fmt: skip
def test_config_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelConfig(kind="dlrm", **changes)  # type: ignore[arg-type]


def test_train_flags_set_the_dlrm_fields() -> None:
    parser = build_parser()
    base_args = ["--data", "synthetic", "--model", "m", "--kind", "dlrm"]
    config = config_from_args(parser.parse_args([*base_args, "--bottom", "16,8"])).model
    assert (config.kind, config.bottom, config.id_dropout) == ("dlrm", (16, 8), 0.3)
    args = parser.parse_args([*base_args, "--bottom", "none", "--id-dropout", "0.25"])
    assert (config_from_args(args).model.bottom, config_from_args(args).model.id_dropout) == (
        (), 0.25,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"--id-dropout must be in \[0, 1\), got 1.0"):
        config_from_args(parser.parse_args([*base_args, "--id-dropout", "1"]))
    with pytest.raises(SystemExit):
        parser.parse_args([*base_args, "--bottom", "8,0"])


def test_training_is_deterministic_by_seed() -> None:
    config = dataclasses.replace(CONFIG, dropout=0.2, l2=1e-3, id_dropout=0.2)
    labels = (np.random.default_rng(0).random(USERS.size) < 0.5).astype(np.float32)

    def train() -> dict[str, np.ndarray]:
        model = dlrm(FEATURE_SETS["all"], config, seed=1)
        optimizer, rng = Adam(model.params, lr=0.01), np.random.default_rng(2)
        for _ in range(5):
            train_step(model, optimizer, USERS, ITEMS, labels, rng)
        return model.params

    first, second = train(), train()
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)


def planted_data() -> tuple[tuple[SideFeature, ...], np.ndarray, np.ndarray, np.ndarray]:
    """120 users in two groups, 30 items of genre 1 or 2 (some also of genre 3): a user of
    group g likes exactly the items of genre g. Returns the features and every (user, item,
    label) of the training data."""
    rng = np.random.default_rng(0)
    n_users, n_items = 120, 30
    groups = np.concatenate([[0], 1 + np.arange(n_users) % 2])
    genres = np.zeros((n_items + 1, 2), dtype=np.int64)
    genres[1:, 0] = 1 + np.arange(n_items) % 2
    genres[1:, 1] = np.where(rng.random(n_items) < 0.3, 3, 0)
    features = (
        SideFeature.categorical("group", Source.USER_TABLE, 3, groups),
        SideFeature.multi_hot("genres", Source.ITEM_TABLE, 4, genres),
    )
    users = np.repeat(np.arange(1, n_users + 1), n_items)
    items = np.tile(np.arange(1, n_items + 1), n_users)
    labels = (groups[users] == genres[items, 0]).astype(np.float32)
    return features, users, items, labels


def rule_auc(scores: np.ndarray, liked: np.ndarray) -> float:
    """Share of (liked, other) item pairs the scores order by the rule (ties count half)."""
    diff = scores[liked][:, None] - scores[~liked][None, :]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def test_a_planted_feature_effect_serves_cold_users_where_ids_alone_cannot() -> None:
    """The label depends only on the user's group and the item's genre: dlrm, trained with id
    dropout, scores a user it never saw (id row 0) from its group; the id-only mlp scores every
    unseen user alike, so it can follow the rule for at most one group."""
    features, users, items, labels = planted_data()
    trained = {}
    for kind in ("dlrm", "mlp"):
        config = ModelConfig(kind=kind, embedding_dim=8, tower=(16, 8), id_dropout=0.3)
        model = build_model(config, 121, 31, 0, features if kind == "dlrm" else ())
        optimizer, rng = Adam(model.params, lr=0.01), np.random.default_rng(1)
        for _ in range(400):
            batch = rng.integers(0, users.size, 128)
            train_step(model, optimizer, users[batch], items[batch], labels[batch], rng)
        trained[kind] = model
    catalog = np.arange(1, 31)
    genre = table(features[1])[catalog, 0]
    dlrm_model = trained["dlrm"]
    assert isinstance(dlrm_model, DLRM)
    for group in (1, 2):
        feeds = dlrm_model.inputs_for(np.zeros(30, dtype=np.int64), catalog)
        feeds["user_group"] = np.full(30, group)
        assert rule_auc(dlrm_model.predict_inputs(feeds), genre == group) > 0.95
        # A known user of the group: the same rule.
        known = np.full(30, group)  # user row `group` is in group `group`
        assert rule_auc(dlrm_model.predict(known, catalog), genre == group) > 0.95
    mlp_cold = trained["mlp"].predict(np.zeros(30, dtype=np.int64), catalog)
    assert rule_auc(mlp_cold, genre == 1) + rule_auc(mlp_cold, genre == 2) == pytest.approx(1.0)


def test_the_logit_is_the_tower_plus_a_biased_dot_product_of_the_ids() -> None:
    """The MF head: with the tower's output weights at zero, the logit is b_out + the weighted
    user.item product + the user's and the item's bias, as an ``mf`` model's; a dropped user id
    takes row 0's bias, as an id the server does not know."""
    model = spread(dlrm(FEATURE_SETS["all"]))
    width = CONFIG.tower[-1]
    model.params["w_out"][:width] = 0.0
    user, item = model.params["user_emb"][USERS], model.params["item_emb"][ITEMS]
    weights = model.params["w_out"][width:, 0]
    biases = model.params["user_bias"][USERS, 0], model.params["item_bias"][ITEMS, 0]
    expected = (user * item) @ weights[:-2] + weights[-2] * biases[0] + weights[-1] * biases[1]
    logits, _ = model.forward(USERS, ITEMS)
    np.testing.assert_allclose(logits, expected + model.params["b_out"][0])
    model.params["user_bias"][0] = 7.0
    dropped = dataclasses.replace(CONFIG, id_dropout=0.9)
    model = DLRM(dropped, N_USER_ROWS, N_ITEM_ROWS, model.params, model.features)
    _, cache = model.forward(USERS, ITEMS, train=True, rng=np.random.default_rng(0))
    assert isinstance(cache, DLRMCache) and (cache.users == 0).any()
    np.testing.assert_array_equal(cache.head_input[:, -2] == 7.0, cache.users == 0)
