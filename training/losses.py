"""Binary cross-entropy on logits, numerically stable for logits of any size."""

from __future__ import annotations

import numpy as np

from training.layers import Array, sigmoid


def bce_with_logits(
    logits: Array, labels: Array, weights: Array | None = None
) -> tuple[float, Array]:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against 0/1 ``labels``, and its gradient.

    Uses ``max(x, 0) - x * y + log1p(exp(-|x|))``, which neither overflows nor loses the loss
    of a confidently wrong logit. The gradient ``(sigmoid(x) - y) / N`` has the logits' dtype.
    ``weights`` (one per sample) scale each sample's loss and gradient: the mean is still over
    ``N`` samples, so weights that average 1 keep the loss on the unweighted scale.
    """
    if logits.shape != labels.shape or logits.ndim != 1:
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must be equal 1-d")
    if weights is not None and weights.shape != logits.shape:
        raise ValueError(f"weights {weights.shape} must match logits {logits.shape}")
    n = logits.shape[0]
    if n == 0:
        raise ValueError("empty batch")
    labels = labels.astype(logits.dtype, copy=False)
    losses = np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))
    dlogits: Array = sigmoid(logits) - labels
    if weights is not None:
        weights = weights.astype(logits.dtype, copy=False)
        losses *= weights
        dlogits *= weights
    dlogits *= 1.0 / n
    return float(losses.mean(dtype=np.float64)), dlogits
