"""The published model is refit on all interactions, hold-outs included, unless told not to."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import training.pipeline as pipeline_module
from modelrepo import read_version
from training.data import SyntheticSpec, synthetic
from training.models import ModelConfig
from training.pipeline import PipelineConfig, run_pipeline
from training.refit import ConcurrentRefit
from training.split import Split, leave_one_out
from training.train import TrainConfig, train_epochs

MODEL = ModelConfig(kind="neumf", embedding_dim=8, tower=(16, 8), gmf_dim=8)
CONFIG = TrainConfig(epochs=4, batch_size=512, patience=1)
PLANTED_USERS = 30


@pytest.fixture(scope="module")
def everything() -> Split:
    data = synthetic(SyntheticSpec(users=80, items=150, interactions=2500, seed=3))
    return leave_one_out(data, seed=0).with_holdouts()


@pytest.mark.parametrize(
    ("reported", "chosen"),
    [
        ((1, 2, 2), 2),  # chosen before the last epoch: the child keeps epoch 2's weights
        ((1, 2, 3, 4), 4),  # chosen at the last epoch: the child may have to finish it first
    ],
)
def test_concurrent_refit_equals_a_sequential_refit_for_the_chosen_epochs(
    everything: Split, reported: tuple[int, ...], chosen: int
) -> None:
    with ConcurrentRefit(everything, MODEL, CONFIG) as refit:
        for best in reported:
            refit.best_so_far(best)
        result = refit.result(chosen)
    assert not refit.running
    expected, losses = train_epochs(everything, MODEL, CONFIG, chosen)
    assert result.epochs == chosen
    assert result.losses == losses
    for name, value in expected.params.items():
        np.testing.assert_array_equal(result.model.params[name], value, err_msg=name)


def _planted_csv(path: Path) -> tuple[Path, list[str]]:
    """A small data set where one item is only ever some users' latest interaction.

    Those interactions are the test hold-outs: the evaluated model never sees them as positives,
    a model refit on everything does.
    """
    data = synthetic(SyntheticSpec(users=100, items=150, interactions=3000, seed=4))
    lines = ["user_id,item_id,timestamp"]
    for user, item, stamp in zip(data.users, data.items, data.timestamps, strict=True):
        lines.append(f"{data.user_ids[user]},{data.item_ids[item]},{stamp}")
    latest = int(data.timestamps.max()) + 1
    planted = data.user_ids[:PLANTED_USERS]
    lines += [f"{user},planted,{latest}" for user in planted]
    path.write_text("\n".join(lines) + "\n")
    return path, planted


def _planted_scores(version: Path, users: list[str]) -> np.ndarray:
    """The published model's scores of the planted item for ``users``, through ONNX Runtime."""
    import onnxruntime as ort

    stored = read_version(version)
    signature = stored.manifest.signature
    user_rows, _ = stored.vocabulary(signature.input("user")).rows(users)
    item_rows, _ = stored.vocabulary(signature.input("item")).rows(["planted"] * len(users))
    session = ort.InferenceSession(stored.model, providers=["CPUExecutionProvider"])
    (scores,) = session.run(["score"], {"user": user_rows, "item": item_rows})
    return np.asarray(scores)


def test_the_refit_model_learned_the_test_holdouts(tmp_path: Path) -> None:
    path, planted = _planted_csv(tmp_path / "planted.csv")
    config = PipelineConfig(
        data=str(path),
        model_name="demo",
        repository=tmp_path / "repo",
        model=MODEL,
        train=dataclasses.replace(CONFIG, epochs=6, patience=2, lr=0.01, batch_size=256),
        quiet=True,
    )
    refit = run_pipeline(config, log=io.StringIO())
    evaluated = run_pipeline(dataclasses.replace(config, refit=False), log=io.StringIO())

    refit_scores = _planted_scores(refit.published.path, planted)
    evaluated_scores = _planted_scores(evaluated.published.path, planted)
    # Never a positive, the planted item is what the evaluated model learned to score low;
    # the refit saw it as 30 users' latest interaction.
    assert np.median(refit_scores) > 3 * np.median(evaluated_scores)
    assert np.mean(refit_scores > evaluated_scores) >= 0.9
    # Both runs evaluated the same model; only what was published differs.
    assert refit.test == evaluated.test

    refit_record = refit.manifest.records()["published_model"]
    evaluated_record = evaluated.manifest.records()["published_model"]
    split = refit.manifest.records()["dataset"]["split"]
    best_epoch = refit.manifest.records()["training"]["best_epoch"]
    assert refit_record["refit"] is True
    assert refit_record["trained_on"] == "all interactions"
    assert refit_record["interactions"] == 3000 + PLANTED_USERS - split["duplicates_removed"]
    assert refit_record["epochs"] == best_epoch
    assert "evaluated model" in refit_record["test_metrics_describe"]
    assert evaluated_record["refit"] is False
    assert evaluated_record["interactions"] == split["train_interactions"]
    assert evaluated_record["epochs"] == best_epoch
    assert evaluated_record["test_metrics_describe"] == "this model"


def test_a_failed_training_ends_the_refit_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[ConcurrentRefit] = []

    class Recorded(ConcurrentRefit):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    def diverge(*args: object, **kwargs: object) -> None:
        assert [refit.running for refit in started] == [True], "the refit runs beside training"
        raise FloatingPointError("training diverged at epoch 1 (loss nan)")

    monkeypatch.setattr(pipeline_module, "ConcurrentRefit", Recorded)
    monkeypatch.setattr(pipeline_module, "train", diverge)
    config = PipelineConfig(
        data="synthetic",
        model_name="demo",
        repository=tmp_path,
        synthetic=SyntheticSpec(users=60, items=120, interactions=1500, seed=1),
        model=MODEL,
        train=CONFIG,
        quiet=True,
    )
    with pytest.raises(FloatingPointError, match="diverged"):
        run_pipeline(config, log=io.StringIO())
    assert not started[0].running
    assert not (tmp_path / "demo").exists()
