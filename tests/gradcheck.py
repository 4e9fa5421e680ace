"""Central finite differences, the reference for every hand-written gradient."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numeric_gradient(loss: Callable[[], float], array: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d loss / d array by central differences, perturbing ``array`` in place entry by entry."""
    grad = np.zeros_like(array, dtype=np.float64)
    for index in np.ndindex(array.shape):
        original = array[index]
        array[index] = original + eps
        plus = loss()
        array[index] = original - eps
        minus = loss()
        array[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def assert_gradient(analytic: np.ndarray, numeric: np.ndarray, name: str) -> None:
    """Analytic and numeric gradients agree to finite-difference accuracy (float64)."""
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=name)
    # A gradient that is zero everywhere would pass trivially; the checks need real signal.
    assert np.abs(numeric).max() > 1e-4, f"{name}: gradient too small to check"
