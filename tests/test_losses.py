"""Binary cross-entropy on logits: value, gradient, numerical stability."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tests.gradcheck import assert_gradient, numeric_gradient
from training.losses import bce_with_logits


def test_loss_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 50)
    labels = (rng.random(50) < 0.4).astype(np.float64)
    p = 1 / (1 + np.exp(-logits))
    expected = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    loss, _ = bce_with_logits(logits, labels)
    assert loss == pytest.approx(expected, rel=1e-12)


def test_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, 20)
    labels = (rng.random(20) < 0.5).astype(np.float64)
    _, dlogits = bce_with_logits(logits, labels)
    numeric = numeric_gradient(lambda: bce_with_logits(logits, labels)[0], logits)
    assert_gradient(dlogits, numeric, "logits")


def test_extreme_logits_stay_finite_and_exact() -> None:
    logits = np.array([-1000.0, 1000.0, -1000.0, 1000.0], dtype=np.float32)
    labels = np.array([1.0, 0.0, 0.0, 1.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, dlogits = bce_with_logits(logits, labels)
    # Two confidently wrong (loss 1000 each), two confidently right (loss 0).
    assert loss == pytest.approx(500.0)
    np.testing.assert_allclose(dlogits, [-0.25, 0.25, 0.0, 0.0])
    assert dlogits.dtype == np.float32


def test_integer_labels_are_accepted_and_gradient_keeps_logit_dtype() -> None:
    logits = np.zeros(4, dtype=np.float32)
    loss, dlogits = bce_with_logits(logits, np.array([0, 1, 1, 0]))
    assert loss == pytest.approx(np.log(2))
    assert dlogits.dtype == np.float32
    np.testing.assert_allclose(dlogits, [0.125, -0.125, -0.125, 0.125])


def test_bad_shapes_fail() -> None:
    with pytest.raises(ValueError, match="must be equal 1-d"):
        bce_with_logits(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="empty"):
        bce_with_logits(np.zeros(0), np.zeros(0))
