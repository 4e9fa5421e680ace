"""The learning-rate schedule: ``lr * lr_decay ** (epoch - 1)``, in training, refit and flags."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest

from training.cli import build_parser, config_from_args
from training.data import SyntheticSpec, synthetic
from training.models import ModelConfig
from training.split import Split, leave_one_out
from training.train import EpochLoop, TrainConfig

MODEL = ModelConfig(kind="mf", embedding_dim=4)


@pytest.fixture(scope="module")
def split() -> Split:
    return leave_one_out(
        synthetic(SyntheticSpec(users=40, items=120, interactions=1_200, factors=2)), seed=0
    )


def test_epoch_lr_decays_once_per_epoch() -> None:
    config = TrainConfig(lr=0.01, lr_decay=0.5)
    assert [config.epoch_lr(e) for e in (1, 2, 3)] == pytest.approx([0.01, 0.005, 0.0025])
    assert TrainConfig(lr=0.01, lr_decay=1.0).epoch_lr(7) == 0.01  # 1: a constant rate


@pytest.mark.parametrize("decay", [0.0, -0.5, 1.5, float("nan")])
def test_lr_decay_out_of_range_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match="lr_decay"):
        TrainConfig(lr_decay=decay)


def _updates(split: Split, decay: float) -> list[dict[str, np.ndarray]]:
    """The change of every parameter in each of two epochs: plain SGD, one batch per epoch."""
    config = TrainConfig(optimizer="sgd", lr=0.5, lr_decay=decay, batch_size=1 << 20, seed=3)
    loop = EpochLoop(split, MODEL, config)
    changes = []
    for epoch in (1, 2):
        before = loop.snapshot()
        loop.run_epoch(epoch, quiet=True, stream=io.StringIO())
        changes.append({k: loop.model.params[k] - v for k, v in before.items()})
    return changes


def test_the_loop_steps_with_the_decayed_rate(split: Split) -> None:
    """One SGD step per epoch from the same weights on the same samples: the decayed run's
    second update is the constant run's scaled by the decay."""
    constant, decayed = _updates(split, 1.0), _updates(split, 0.25)
    for name, change in constant[0].items():
        np.testing.assert_array_equal(decayed[0][name], change)  # epoch 1: the full rate
        expected = 0.25 * constant[1][name]
        np.testing.assert_allclose(decayed[1][name], expected, rtol=1e-3, atol=2e-7, err_msg=name)
    assert np.abs(constant[1]["item_bias"]).max() > 1e-3  # a real step: the match is not vacuous


def test_the_flag_reaches_the_configuration_and_is_checked() -> None:
    parser = build_parser()
    base = ["--data", "synthetic", "--model", "m"]
    train = config_from_args(parser.parse_args([*base, "--lr-decay", "0.9"])).train
    assert train.lr_decay == 0.9
    assert dataclasses.asdict(train)["lr_decay"] == 0.9  # what the manifest records
    with pytest.raises(ValueError, match="--lr-decay must be in"):
        config_from_args(parser.parse_args([*base, "--lr-decay", "1.2"]))
