"""Optimizers and the one-batch training step.

L2 regularisation lives in the loss (``ModelConfig.l2``, applied by ``Model.backward``), never in
the optimizers, so SGD and Adam minimise the same objective. An embedding table's gradient is a
``SparseRows``; both optimizers then update only the rows the batch touched ("lazy" updates, as
in TensorFlow's LazyAdam and PyTorch's SparseAdam): the state of other rows stays as it was.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from training.layers import Array, Grads, Params, SparseRows
from training.losses import bce_with_logits
from training.models import Model


class Optimizer(Protocol):
    """Updates parameters in place from one batch's gradients."""

    def step(self, grads: Grads) -> None: ...


class SGD:
    """Stochastic gradient descent, optionally with (heavy-ball) momentum."""

    def __init__(self, params: Params, lr: float, momentum: float = 0.0) -> None:
        if lr <= 0.0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.params = params
        self.lr = lr
        self.momentum = momentum
        self._velocity: dict[str, Array] = {}

    def step(self, grads: Grads) -> None:
        for name, grad in grads.items():
            param = self.params[name]
            if self.momentum == 0.0:
                if isinstance(grad, SparseRows):
                    param[grad.rows] -= self.lr * grad.values
                else:
                    param -= self.lr * grad
                continue
            velocity = self._velocity.get(name)
            if velocity is None:
                velocity = self._velocity[name] = np.zeros_like(param)
            if isinstance(grad, SparseRows):
                rows_velocity = self.momentum * velocity[grad.rows] + grad.values
                velocity[grad.rows] = rows_velocity
                param[grad.rows] -= self.lr * rows_velocity
            else:
                velocity *= self.momentum
                velocity += grad
                param -= self.lr * velocity


class _PackedDense:
    """Dense parameters packed into one flat buffer, so that Adam updates them in a few calls.

    The parameter dictionary's entries are rebound to views of the buffer. An entry rebound to
    another array later (e.g. loaded weights) is copied into its slot and rebound again.
    """

    def __init__(self, params: Params, names: list[str]) -> None:
        self.names = names
        self.shapes = [params[name].shape for name in names]
        sizes = [params[name].size for name in names]
        dtype = np.result_type(*(params[name] for name in names))
        self.values = np.concatenate([params[name].ravel() for name in names]).astype(dtype)
        self.grad = np.empty_like(self.values)
        self.m = np.zeros_like(self.values)
        self.v = np.zeros_like(self.values)
        self.scratch = np.empty_like(self.values)
        bounds = np.cumsum([0, *sizes])
        self.views = [
            self.values[lo:hi].reshape(shape)
            for lo, hi, shape in zip(bounds[:-1], bounds[1:], self.shapes, strict=True)
        ]
        for name, view in zip(names, self.views, strict=True):
            params[name] = view

    def sync(self, params: Params) -> None:
        """Re-adopt any entry of ``params`` that no longer is this buffer's view."""
        for name, view in zip(self.names, self.views, strict=True):
            current = params[name]
            if current is not view:
                if current.shape != view.shape:
                    raise ValueError(f"parameter {name} changed shape to {current.shape}")
                view[...] = current
                params[name] = view


class Adam:
    """Adam (Kingma and Ba, 2015) with PyTorch's bias-correction arithmetic.

    ``param -= lr / bc1 * m / (sqrt(v / bc2) + eps)`` with ``bc_i = 1 - beta_i ** t``, computed
    as ``lr * sqrt(bc2) / bc1 * m / (sqrt(v) + eps * sqrt(bc2))``. The dense parameters are
    packed into one buffer on the first step (see ``_PackedDense``).
    """

    def __init__(
        self,
        params: Params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        if lr <= 0.0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        if not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0
        self._dense: _PackedDense | None = None
        self._rows_moments: dict[str, tuple[Array, Array]] = {}

    def step(self, grads: Grads) -> None:
        self.steps += 1
        bc1 = 1.0 - self.beta1**self.steps
        bc2 = 1.0 - self.beta2**self.steps
        step_size = self.lr * math.sqrt(bc2) / bc1
        eps = self.eps * math.sqrt(bc2)
        dense: dict[str, Array] = {}
        for name, grad in grads.items():
            if isinstance(grad, SparseRows):
                self._sparse_step(name, grad, step_size, eps)
            else:
                dense[name] = grad
        if dense:
            self._dense_step(dense, step_size, eps)

    def _dense_step(self, grads: dict[str, Array], step_size: float, eps: float) -> None:
        packed = self._dense
        if packed is None:
            packed = self._dense = _PackedDense(self.params, list(grads))
        elif list(grads) != packed.names:
            raise ValueError(f"dense gradients {list(grads)} differ from {packed.names}")
        packed.sync(self.params)
        np.concatenate([grads[name].ravel() for name in packed.names], out=packed.grad)
        g, m, v, scratch = packed.grad, packed.m, packed.v, packed.scratch
        m *= self.beta1
        np.multiply(g, 1.0 - self.beta1, out=scratch)
        m += scratch
        v *= self.beta2
        np.multiply(g, g, out=scratch)
        scratch *= 1.0 - self.beta2
        v += scratch
        np.sqrt(v, out=scratch)
        scratch += eps
        np.divide(m, scratch, out=scratch)
        scratch *= step_size
        packed.values -= scratch

    def _sparse_step(self, name: str, grad: SparseRows, step_size: float, eps: float) -> None:
        param = self.params[name]
        moments = self._rows_moments.get(name)
        if moments is None:
            moments = self._rows_moments[name] = (np.zeros_like(param), np.zeros_like(param))
        rows, g = grad.rows, grad.values
        m_rows = np.take(moments[0], rows, axis=0)
        m_rows *= self.beta1
        scratch = g * (1.0 - self.beta1)
        m_rows += scratch
        v_rows = np.take(moments[1], rows, axis=0)
        v_rows *= self.beta2
        np.multiply(g, g, out=scratch)
        scratch *= 1.0 - self.beta2
        v_rows += scratch
        moments[0][rows] = m_rows
        moments[1][rows] = v_rows
        np.sqrt(v_rows, out=scratch)
        scratch += eps
        np.divide(m_rows, scratch, out=scratch)
        scratch *= step_size
        param_rows = np.take(param, rows, axis=0)
        param_rows -= scratch
        param[rows] = param_rows


def train_step(
    model: Model,
    optimizer: Optimizer,
    users: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    weights: np.ndarray | None = None,
    sample_features: Mapping[str, np.ndarray] | None = None,
) -> float:
    """Forward, loss, backward and one optimizer step on a mini-batch of embedding rows
    (``sample_features``: per-row side-feature values, as ``Model.forward`` takes them).

    Returns the batch's objective: mean (``weights``-weighted) binary cross-entropy plus the L2
    term.
    """
    logits, cache = model.forward(
        users, items, train=True, rng=rng, sample_features=sample_features
    )
    loss, dlogits = bce_with_logits(logits, labels, weights)
    loss += model.regularization(cache)
    optimizer.step(model.backward(cache, dlogits))
    return loss
