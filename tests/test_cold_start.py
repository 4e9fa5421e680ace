"""Cold start: a share of the users held out of training entirely, then served from their side
features only (the unknown id row with their own features), measured beside popularity on the
same candidate lists. On planted data (occupation decides the genre) the features must beat
popularity clearly; the held-out users must be nowhere in what the model or the version saw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelrepo import read_version
from tests.planted_features import MODEL, N_USERS, TRAIN, Planted, write_planted
from training.cli import main
from training.cold_start import NEGATIVES, hold_out_users
from training.data import load
from training.feature_inputs import FeatureOptions
from training.models import ModelConfig
from training.pipeline import PipelineConfig, PipelineResult, run_pipeline, summary


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Planted:
    return write_planted(tmp_path_factory.mktemp("cold"))


def test_held_out_users_leave_the_data_and_its_vocabulary(planted: Planted) -> None:
    data = load(planted.interactions)
    warm, cold = hold_out_users(data, 0.25, seed=3)
    assert cold is not None
    assert len(cold.ids) == N_USERS // 4 and warm.n_users == N_USERS - len(cold.ids)
    assert not set(cold.ids) & set(warm.user_ids)
    assert len(warm) + cold.users.size == len(data)
    # Every interaction of a held-out user is theirs, none of the others is.
    cold_rows = {data.user_ids.index(raw) for raw in cold.ids}
    assert int(np.isin(data.users, list(cold_rows)).sum()) == cold.users.size
    assert [warm.user_ids[u] for u in warm.users[:3]] == [
        raw for raw in (data.user_ids[u] for u in data.users) if raw not in cold.ids
    ][:3]
    _, cold_again = hold_out_users(data, 0.25, seed=3)
    assert cold_again is not None and cold_again.ids == cold.ids  # seeded
    same, none = hold_out_users(data, 0.0, seed=3)
    assert same is data and none is None


def test_each_cold_user_ranks_their_latest_known_item_against_unseen_ones(
    planted: Planted,
) -> None:
    data = load(planted.interactions)
    warm, cold = hold_out_users(data, 0.1, seed=0)
    assert cold is not None
    candidates = cold.candidates(warm.item_ids, seed=0)
    assert candidates.items.shape == (len(cold.ids), 1 + NEGATIVES)
    for user, row in zip(candidates.users.tolist(), candidates.items, strict=True):
        mine = cold.users == user
        held = [cold.items[i] for i in np.flatnonzero(mine)]
        stamps = cold.timestamps[mine]
        latest = held[int(np.argmax(stamps))]
        assert warm.item_ids[row[0]] == latest
        negatives = {warm.item_ids[i] for i in row[1:]}
        assert len(negatives) == NEGATIVES and not negatives & set(held)


def _run(planted: Planted, repository: Path, **changes: object) -> PipelineResult:
    values: dict[str, object] = {
        "data": str(planted.interactions), "model_name": "cold", "repository": repository,
        "model": MODEL, "train": TRAIN, "quiet": True, "cold_start_users": 0.2,
        "features": FeatureOptions(user_path=planted.users, item_path=planted.items),
    }  # fmt: skip
    values.update(changes)
    return run_pipeline(PipelineConfig(**values))  # type: ignore[arg-type]


def test_cold_users_served_from_features_beat_popularity(planted: Planted, tmp_path: Path) -> None:
    result = _run(planted, tmp_path)
    cold = result.manifest.records()["cold_start"]
    assert cold["users_held_out"] == round(0.2 * N_USERS) == cold["users_evaluated"]
    model, popularity = cold["model"], cold["popularity"]
    assert model["hr@10"] >= popularity["hr@10"] + 0.15, cold
    assert model["ndcg@10"] > popularity["ndcg@10"], cold
    assert cold["lift"]["hr@10"] == pytest.approx(model["hr@10"] - popularity["hr@10"])
    report = summary(result)
    assert "cold start (32 of 32 held-out users" in report
    assert f"model (features only)   {model['hr@10']:.4f}" in report
    # The published version never saw them: not in the id vocabulary, nor in the user table.
    stored = read_version(result.published.path)
    users = stored.vocabularies["users.txt"]
    assert len(users) == N_USERS - 32
    data = load(planted.interactions)
    _, held = hold_out_users(data, 0.2, seed=TRAIN.seed)
    assert held is not None and not any(raw in users for raw in held.ids)


def test_an_id_only_model_is_measured_on_cold_users_by_its_unknown_row(
    planted: Planted, tmp_path: Path
) -> None:
    """Without side features every cold user gets the same scores: those of the unknown row."""
    result = _run(
        planted, tmp_path, features=None, refit=False, model=ModelConfig(kind="mf", embedding_dim=8)
    )
    records = result.manifest.records()
    assert "features" not in records
    cold = records["cold_start"]
    assert cold["users_evaluated"] == 32
    assert 0.0 <= cold["model"]["hr@10"] <= 1.0


def test_the_share_must_be_a_fraction(planted: Planted, tmp_path: Path) -> None:
    argv = ["--data", str(planted.interactions), "--model", "m", "--repository", str(tmp_path)]
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--cold-start-users", "1.5"])
    assert exited.value.code == 2
