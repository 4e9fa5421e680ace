"""The training loop: fresh negatives each epoch, mini-batches, early stopping on validation.

Models take embedding rows; the split holds dense indices, so rows are ``dense + 1`` and row 0,
the unknown-id row, is trained by replacing a small fraction of the ids of each epoch with it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TextIO

import numpy as np

from modelrepo import UNKNOWN_ROW
from training.evaluate import Metrics, evaluate
from training.item_history import HISTORY_INPUT, training_bags, with_history
from training.models import Model, ModelConfig, SideFeature, build_model
from training.optim import SGD, Adam, train_step
from training.progress import ProgressBar
from training.split import Candidates, NegativeSampler, Split
from training.threads import limit_blas_threads

OptimizerName = Literal["adam", "sgd"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of the loop (the model's own are in ``ModelConfig``).

    The defaults won the MovieLens 100K sweep (``bench/quality_sweep.py``): a rate that starts
    high and decays by a tenth each epoch, and room for the 15-20 epochs it then needs.
    """

    optimizer: OptimizerName = "adam"
    lr: float = 0.003
    lr_decay: float = 0.9  # the learning rate of epoch e is lr * lr_decay ** (e - 1)
    batch_size: int = 256
    negatives: int = 4
    epochs: int = 40
    patience: int = 5
    seed: int = 0
    unknown_rate: float = 0.01
    threads: int = 1  # BLAS threads while training; 0 leaves the library's default
    recency_weight: float = 0.0  # exponent of the positives' recency weights; 0: all weigh 1

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.batch_size < 1 or self.negatives < 1 or self.epochs < 1:
            raise ValueError(f"invalid training configuration: {self}")
        if self.patience < 0 or self.threads < 0 or not 0.0 <= self.unknown_rate < 1.0:
            raise ValueError(f"invalid training configuration: {self}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")
        if not (math.isfinite(self.recency_weight) and self.recency_weight >= 0.0):
            raise ValueError(f"recency_weight must be finite and >= 0, got {self.recency_weight}")

    def epoch_lr(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (1-based): ``lr`` decayed once per epoch before.

        Decay lets a run start fast and still settle: a rate that learns the first epochs quickly
        overshoots later ones, and one small enough for the end wastes the start.
        """
        return self.lr * self.lr_decay ** (epoch - 1)


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    loss: float
    val_hr: float
    val_ndcg: float
    samples: int
    seconds: float
    samples_per_s: float


@dataclass
class TrainResult:
    model: Model
    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_validation: Metrics | None = None
    stopped_early: bool = False
    seconds: float = 0.0

    def history_json(self) -> dict[str, Any]:
        """Every epoch's figures and how training ended: the version's training history."""
        epochs = [asdict(record) for record in self.history]
        return dict(best_epoch=self.best_epoch, stopped_early=self.stopped_early, epochs=epochs)

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def scorer(model: Model) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Score dense (user, item) indices with ``model`` (rows are indices + 1)."""

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return model.predict(users + 1, items + 1)

    return score


def recency_weights(users: np.ndarray, power: float) -> np.ndarray:
    """Per-positive loss weights that grow with the interaction's place in its user's history.

    ``users`` lists each user's positives oldest first (the split orders them by timestamp; the
    refit appends the hold-outs, later still). The ``i``-th of a user's ``n`` positives (1-based)
    weighs ``(i / n) ** power``, scaled so that each user's weights average 1: a user's share of
    the loss stays as it was, but within it what they did lately counts more, since that is what
    best predicts what they do next. ``power`` 0 weighs every positive 1.
    """
    if users.size == 0:
        return np.ones(0, np.float32)
    order = np.argsort(users, kind="stable")
    sorted_users = users[order]
    starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    lengths = np.diff(np.r_[starts, sorted_users.size])
    first = np.repeat(starts, lengths)
    length = np.repeat(lengths, lengths).astype(np.float64)
    raw = ((np.arange(sorted_users.size) - first + 1) / length) ** power
    totals = np.add.reduceat(raw, starts)
    weights = np.empty(users.size, np.float32)
    weights[order] = raw * (length / np.repeat(totals, lengths))
    return weights


def epoch_samples(
    split: Split,
    sampler: NegativeSampler,
    rng: np.random.Generator,
    negatives: int,
    unknown_rate: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled (user rows, item rows, labels) for one epoch: positives plus fresh negatives."""
    users, items, labels, _, _ = weighted_epoch_samples(
        split, sampler, rng, negatives, unknown_rate, None
    )
    return users, items, labels


def weighted_epoch_samples(
    split: Split,
    sampler: NegativeSampler,
    rng: np.random.Generator,
    negatives: int,
    unknown_rate: float,
    positive_weights: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """``epoch_samples``, each sample's loss weight: ``positive_weights`` (one per training
    positive) for positives, 1 for negatives (None when ``positive_weights`` is None), and each
    sample's origin: the index of the training positive it is or was drawn for.

    Negatives keep weight 1: giving each the weight of the positive it was drawn for measured
    worse on MovieLens 100K (``bench/README.md``), as it also mutes the old items' negatives.
    """
    pos_users, pos_items = split.train_users, split.train_items
    neg_items = sampler.sample(rng, pos_users, negatives).reshape(-1)
    neg_users = np.repeat(pos_users, negatives)
    valid = neg_items >= 0
    users = np.concatenate([pos_users, neg_users[valid]]) + 1
    items = np.concatenate([pos_items, neg_items[valid]]) + 1
    positives = np.arange(pos_users.size)
    origins = np.concatenate([positives, np.repeat(positives, negatives)[valid]])
    labels = np.zeros(users.size, dtype=np.float32)
    labels[: pos_users.size] = 1.0
    order = rng.permutation(users.size)
    users, items, labels, origins = users[order], items[order], labels[order], origins[order]
    weights: np.ndarray | None = None
    if positive_weights is not None:
        weights = np.ones(users.size, dtype=np.float32)
        weights[: pos_users.size] = positive_weights
        weights = weights[order]
    if unknown_rate > 0:
        users[rng.random(users.size) < unknown_rate] = UNKNOWN_ROW
        items[rng.random(items.size) < unknown_rate] = UNKNOWN_ROW
    return users, items, labels, weights, origins


def _optimizer(model: Model, config: TrainConfig) -> Adam | SGD:
    if config.optimizer == "adam":
        return Adam(model.params, lr=config.lr)
    return SGD(model.params, lr=config.lr)


def _monitor(metrics: Metrics | None, loss: float) -> float:
    """Higher is better: validation NDCG@10, or minus the loss when there is no validation."""
    return metrics.ndcg if metrics is not None else -loss


class EpochLoop:
    """One model trained epoch by epoch on one split's training positives.

    Early-stopped training and the refit on all interactions share it, so that a refit with the
    same seed and hyper-parameters follows exactly the steps a training run would on that data.
    """

    def __init__(
        self,
        split: Split,
        model_config: ModelConfig,
        config: TrainConfig,
        features: Sequence[SideFeature] = (),
    ) -> None:
        self.split = split
        self.config = config
        k = model_config.history_items
        self.model = build_model(
            model_config, split.n_users + 1, split.n_items + 1, config.seed,
            with_history(features, split, k),
        )  # fmt: skip
        self.bags = training_bags(split, k)
        self.optimizer = _optimizer(self.model, config)
        self.rng = np.random.default_rng([config.seed, 0x7A1])
        self.sampler = NegativeSampler(
            split.train_users, split.train_items, split.n_users, split.n_items
        )
        self.weights = (
            recency_weights(split.train_users, config.recency_weight)
            if config.recency_weight > 0
            else None
        )

    def run_epoch(self, epoch: int, *, quiet: bool, stream: TextIO) -> tuple[float, int, float]:
        """Train one epoch; returns (mean loss, samples, seconds spent training)."""
        config, model = self.config, self.model
        t0 = time.perf_counter()
        self.optimizer.lr = config.epoch_lr(epoch)
        users, items, labels, weights, origins = weighted_epoch_samples(
            self.split, self.sampler, self.rng, config.negatives, config.unknown_rate, self.weights
        )
        bags = self.bags
        bar = ProgressBar(
            users.size, f"epoch {epoch}/{config.epochs}", stream=stream, enabled=not quiet
        )
        total_loss = 0.0
        for start in range(0, users.size, config.batch_size):
            stop = min(users.size, start + config.batch_size)
            loss = train_step(
                model,
                self.optimizer,
                users[start:stop],
                items[start:stop],
                labels[start:stop],
                self.rng,
                None if weights is None else weights[start:stop],
                None if bags is None else {HISTORY_INPUT: bags[origins[start:stop]]},
            )
            total_loss += loss * (stop - start)
            bar.update(stop, total_loss / stop)
        bar.close()
        mean_loss = total_loss / max(1, users.size)
        if not math.isfinite(mean_loss):
            raise FloatingPointError(f"training diverged at epoch {epoch} (loss {mean_loss})")
        return mean_loss, int(users.size), time.perf_counter() - t0

    def snapshot(self) -> dict[str, np.ndarray]:
        """A copy of the weights."""
        return {name: value.copy() for name, value in self.model.params.items()}


def train(
    split: Split,
    model_config: ModelConfig,
    config: TrainConfig,
    *,
    quiet: bool = False,
    log: TextIO | None = None,
    on_best: Callable[[int], None] | None = None,
    features: Sequence[SideFeature] = (),
) -> TrainResult:
    """Train a model on ``split``; keep the weights of the best validation epoch.

    ``on_best`` hears the best epoch so far after every epoch (a refit running beside this one
    needs to keep only the weights of epochs that can still be chosen). ``features``: the side
    features of a kind that reads them (``dlrm``).
    """
    with limit_blas_threads(config.threads or None):
        return _train(split, model_config, config, quiet=quiet, log=log, on_best=on_best,
                      features=features)  # fmt: skip


def _train(
    split: Split,
    model_config: ModelConfig,
    config: TrainConfig,
    *,
    quiet: bool,
    log: TextIO | None,
    on_best: Callable[[int], None] | None,
    features: Sequence[SideFeature],
) -> TrainResult:
    stream = log if log is not None else sys.stderr
    loop = EpochLoop(split, model_config, config, features)
    validation: Candidates | None = split.validation if len(split.validation) else None
    result = TrainResult(model=loop.model)
    best_score = -math.inf
    best_params = loop.snapshot()
    waited = 0
    started = time.perf_counter()

    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        mean_loss, samples, train_seconds = loop.run_epoch(epoch, quiet=quiet, stream=stream)
        metrics = evaluate(scorer(loop.model), validation) if validation is not None else None
        record = EpochRecord(
            epoch=epoch,
            loss=mean_loss,
            val_hr=metrics.hr if metrics else math.nan,
            val_ndcg=metrics.ndcg if metrics else math.nan,
            samples=samples,
            seconds=time.perf_counter() - t0,
            samples_per_s=samples / train_seconds if train_seconds > 0 else 0.0,
        )
        result.history.append(record)
        if not quiet:
            stream.write(_epoch_line(record, config.epochs) + "\n")
            stream.flush()
        score = _monitor(metrics, mean_loss)
        if score > best_score:
            best_score, waited = score, 0
            result.best_epoch, result.best_validation = epoch, metrics
            best_params = loop.snapshot()
        else:
            waited += 1
        if on_best is not None:
            on_best(result.best_epoch)
        if waited and waited >= config.patience:
            result.stopped_early = True
            break

    for name, value in best_params.items():
        loop.model.params[name][...] = value
    result.seconds = time.perf_counter() - started
    return result


def train_epochs(
    split: Split,
    model_config: ModelConfig,
    config: TrainConfig,
    epochs: int,
    features: Sequence[SideFeature] = (),
) -> tuple[Model, list[float]]:
    """A fresh model trained for exactly ``epochs`` epochs, without validation: the refit.

    Returns the model and each epoch's mean loss.
    """
    with limit_blas_threads(config.threads or None):
        loop = EpochLoop(split, model_config, config, features)
        losses = [
            loop.run_epoch(epoch, quiet=True, stream=sys.stderr)[0]
            for epoch in range(1, epochs + 1)
        ]
    return loop.model, losses


def _epoch_line(record: EpochRecord, epochs: int) -> str:
    validation = (
        f" val HR@10 {record.val_hr:.4f} NDCG@10 {record.val_ndcg:.4f}"
        if math.isfinite(record.val_hr)
        else ""
    )
    return (
        f"epoch {record.epoch}/{epochs}: loss {record.loss:.4f}{validation} "
        f"({record.seconds:.1f}s, {record.samples_per_s:,.0f} samples/s)"
    )
