"""The dlrm kind's interaction: the sum of the pairs' products (the dot product for two vectors)
and its gradient. Its ONNX form is held to it by the parity tests of ``test_dlrm_export``."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from tests.gradcheck import assert_gradient, numeric_gradient
from training.models.dlrm_interaction import (
    interaction,
    interaction_backward,
    interaction_width,
)


def vectors(n_vectors: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(5, n_vectors, 3))


@pytest.mark.parametrize("n_vectors", [3, 4, 7])
def test_the_interaction_sums_every_pairs_product(n_vectors: int) -> None:
    stacked = vectors(n_vectors)
    expected = sum(stacked[:, i] * stacked[:, j] for i, j in combinations(range(n_vectors), 2))
    np.testing.assert_allclose(interaction(stacked), expected, rtol=1e-12)
    assert interaction_width(n_vectors, 3) == 3


def test_two_vectors_give_their_dot_product() -> None:
    stacked = vectors(2)
    expected = (stacked[:, 0] * stacked[:, 1]).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(interaction(stacked), expected, rtol=1e-12)
    assert interaction_width(2, 3) == 1
    with pytest.raises(ValueError, match="at least two vectors"):
        interaction_width(1, 3)


@pytest.mark.parametrize("n_vectors", [2, 3, 5])
def test_the_backward_pass_matches_finite_differences(n_vectors: int) -> None:
    stacked = vectors(n_vectors, seed=1)
    upstream = np.random.default_rng(2).normal(size=interaction(stacked).shape)

    def objective() -> float:
        return float(np.vdot(upstream, interaction(stacked)))

    analytic = interaction_backward(upstream, stacked)
    assert_gradient(analytic, numeric_gradient(objective, stacked), "vectors")
