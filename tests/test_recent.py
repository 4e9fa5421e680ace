"""The published mf model's user vectors lean towards each user's latest items: the blend's
arithmetic, what it gains on a planted sequential pattern, that validation chooses it (and keeps
the trained vectors where recency tells nothing), the manifest's record, the flags, and that the
published and evaluated versions carry the blend with the histories the report names."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from modelrepo import read_version
from recserve import cli
from training.data import Interactions, SyntheticSpec, synthetic
from training.evaluate import evaluate
from training.models import ModelConfig, build_model
from training.pipeline import PipelineConfig, run_pipeline, summary
from training.recent import (
    OFF,
    Blend,
    LatestItems,
    RecentOptions,
    blended_users,
    choose_recent,
)
from training.split import leave_one_out
from training.train import TrainConfig, scorer, train

MF = ModelConfig(kind="mf", embedding_dim=16, l2=1e-4)  # the tests were sized with this L2
TRAIN = TrainConfig(epochs=8, patience=8, lr=0.01, batch_size=256, seed=1)
TINY = SyntheticSpec(users=120, items=160, interactions=3000, seed=2)
FIXED = RecentOptions(items=2, share=0.5, decay=0.5)
BLEND = Blend(share=0.5, items=2, decay=0.5)


def _hand_params() -> dict[str, np.ndarray]:
    """User rows 0 (unknown), 1, 2 and item rows 0 (unknown), 1, 2, two dims."""
    return {
        "user_emb": np.array([[9.0, 9.0], [3.0, 4.0], [1.0, 1.0]], np.float32),
        "item_emb": np.array([[7.0, 7.0], [1.0, 0.0], [0.0, 2.0]], np.float32),
    }


def test_the_blend_by_hand() -> None:
    # User 0 (row 1) had item 0 (row 1), then item 1 (row 2); user 1 (row 2) has no history.
    latest = LatestItems(np.array([0, 0]), np.array([0, 1]), n_users=2, depth=3)
    assert latest.rows.tolist() == [[-1, -1, -1], [2, 1, -1], [-1, -1, -1]]
    params = _hand_params()
    # K=1: the latest item's vector (0, 2), stretched to |(3, 4)| = 5: (0, 5); half of each.
    one = blended_users(params, latest, Blend(share=0.5, items=1, decay=1.0))
    np.testing.assert_allclose(one[1], [1.5, 4.5], rtol=1e-6)
    # K=2, decay 0.5: ((0, 2) + 0.5 (1, 0)) / 1.5 = (1, 4) / 3, stretched to length 5.
    two = blended_users(params, latest, Blend(share=0.25, items=2, decay=0.5))
    np.testing.assert_allclose(two[1], 0.25 * np.array([3, 4]) + 0.75 * 5 * np.array([1, 4])
                               / np.sqrt(17), rtol=1e-6)  # fmt: skip
    for table in (one, two):  # the unknown row and the user without history are left alone
        np.testing.assert_array_equal(table[[0, 2]], params["user_emb"][[0, 2]])
    np.testing.assert_array_equal(blended_users(params, latest, OFF), params["user_emb"])


def test_latest_items_follow_time_order_when_holdouts_come_last() -> None:
    # A refit's split lists training positives by user, then the hold-outs (latest) after them.
    users = np.array([0, 0, 0, 1, 1, 0, 1])
    items = np.array([5, 6, 7, 8, 9, 1, 2])
    latest = LatestItems(users, items, n_users=2, depth=2)
    assert latest.rows[1:].tolist() == [[2, 8], [3, 10]]  # item rows, latest first


def test_the_grid_tries_off_once_and_what_is_fixed_only() -> None:
    grid = RecentOptions().grid()
    assert grid[0] == OFF and sum(blend.off for blend in grid) == 1 and len(grid) == 28
    assert RecentOptions(items=5, share=0.6).grid() == [Blend(0.6, 5, d) for d in (1, 0.8, 0.6)]
    assert RecentOptions(items=0).switched_off and RecentOptions(share=1.0).switched_off
    assert RecentOptions(enabled=False).switched_off and FIXED.fixed


def _sequential(users: int = 150, seed: int = 3) -> Interactions:
    """Each user's history: 8 items of one cluster of taste A and up to 3 other A items, then 5
    items of one cluster of taste B (the last two become the hold-outs); 10 clusters of 10 items
    per taste. Most of what training sees of a user is A; what comes next is B."""
    rng = np.random.default_rng(seed)
    rows_u, rows_i = [], []
    for user in range(users):
        a, b = rng.integers(10, size=2)
        old = np.concatenate([rng.choice(10, 8, replace=False) + 10 * a, rng.choice(100, 3)])
        old = old[np.sort(np.unique(old, return_index=True)[1])]  # once each, in order
        picks = np.concatenate([old, rng.choice(10, 5, replace=False) + 100 + 10 * b])
        rows_u += [user] * picks.size
        rows_i += picks.tolist()
    users_a, items_a = np.array(rows_u, np.int64), np.array(rows_i, np.int64)
    stamps = np.arange(users_a.size, dtype=np.int64)
    return Interactions([f"u{u}" for u in range(users)], [f"i{i}" for i in range(200)],
                        users_a, items_a, stamps, "sequential", "planted")  # fmt: skip


def test_a_planted_sequential_pattern_is_followed() -> None:
    split = leave_one_out(_sequential(), seed=0)
    model = train(split, MF, TRAIN, quiet=True).model
    plain = evaluate(scorer(model), split.test)
    choice = choose_recent(RecentOptions(), "mf", model, split)
    blended = evaluate(scorer(model), split.test)
    assert choice.record["applied"] and choice.blend.share < 1.0
    assert blended.hr > plain.hr + 0.15 and blended.ndcg > plain.ndcg + 0.08  # measured: +0.28
    # The figures are the validation hold-outs' for the model as it now is.
    chosen = choice.record["validation"]["chosen"]
    assert chosen["ndcg@10"] == evaluate(scorer(model), split.validation).ndcg
    assert chosen["ndcg@10"] > choice.record["validation"]["off"]["ndcg@10"]


def test_without_temporal_structure_validation_keeps_the_trained_vectors_or_close() -> None:
    # The synthetic set orders each user's picks at random: the latest items say nothing more
    # to a model trained to its best validation epoch (an under-trained one gains from a mean of
    # any of the user's items, recent or not).
    split = leave_one_out(synthetic(TINY), seed=0)
    model = train(split, MF, TrainConfig(epochs=20, seed=1), quiet=True).model
    choice = choose_recent(RecentOptions(), "mf", model, split)
    validation = choice.record["validation"]
    assert validation["chosen"]["ndcg@10"] >= validation["off"]["ndcg@10"]
    assert choice.blend.off or choice.blend.share >= 0.8


def test_other_kinds_and_switched_off_are_left_as_trained() -> None:
    split = leave_one_out(synthetic(TINY), seed=0)
    for kind, options in (("mlp", RecentOptions()), ("mf", RecentOptions(enabled=False))):
        model = build_model(dataclasses.replace(MF, kind=kind), split.n_users + 1,
                            split.n_items + 1, seed=0)  # fmt: skip
        before = model.params["user_emb"].copy()
        choice = choose_recent(options, kind, model, split)
        assert choice.blend == OFF and not choice.record["applied"]
        np.testing.assert_array_equal(model.params["user_emb"], before)
    record = choose_recent(RecentOptions(), "mlp", model, split).record
    assert "share the item embeddings' space" in record["reason"]


def _table(version: Path, name: str) -> np.ndarray:
    """A table of the published ONNX graph."""
    graph = onnx.load_from_string(read_version(version).model).graph
    (table,) = (init for init in graph.initializer if init.name == name)
    result: np.ndarray = numpy_helper.to_array(table)
    return result


def _run(repository: Path, name: str, **changes: Any) -> Any:
    config = PipelineConfig(data="synthetic", model_name=name, repository=repository,
                            synthetic=TINY, model=MF, train=TRAIN, quiet=True)  # fmt: skip
    return run_pipeline(dataclasses.replace(config, **changes), log=io.StringIO())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same training published plain, and with a fixed blend, refit and not."""
    repository = tmp_path_factory.mktemp("repo")
    return {
        "plain": _run(repository, "plain", recent=RecentOptions(enabled=False)),
        "refit": _run(repository, "refit", recent=FIXED),
        "evaluated": _run(repository, "evaluated", recent=FIXED, refit=False),
    }


def test_the_refit_is_blended_with_every_interaction_and_the_evaluated_with_training(
    runs: dict[str, Any],
) -> None:
    data = synthetic(TINY)
    split = leave_one_out(data, seed=TRAIN.seed)
    everything = split.with_holdouts()
    plain = {name: _table(runs["plain"].published.path, name) for name in ("user_emb", "item_emb")}
    expected = blended_users(plain, LatestItems.of(everything, 2), BLEND)
    published = _table(runs["refit"].published.path, "user_emb")
    np.testing.assert_allclose(published, expected, atol=1e-6)
    # The hold-outs made a difference: with training-split histories the table is another.
    assert not np.allclose(published, blended_users(plain, LatestItems.of(split, 2), BLEND))
    record = runs["refit"].manifest.records()["recent_items"]
    assert record == {
        "applied": True,
        "share": 0.5,
        "items": 2,
        "decay": 0.5,
        "chosen_on": "flags",
        "validation": record["validation"],
        "test_histories": "training split (hold-outs excluded)",
        "published_histories": "all interactions (hold-outs included)",
    }
    assert record["validation"]["chosen"] != record["validation"]["off"]
    evaluated = runs["evaluated"].manifest.records()["recent_items"]
    assert evaluated["published_histories"] == "training split (hold-outs excluded)"
    assert "0.5 own + 0.5 mean of the latest 2 items (decay 0.5)" in summary(runs["refit"])
    # The report's test figures are the blended model's, not the plain one's.
    assert runs["refit"].test == runs["evaluated"].test != runs["plain"].test


def test_evaluate_reproduces_a_blended_evaluated_version(
    runs: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    version = runs["evaluated"].published.path
    argv = ["evaluate", "--data", "synthetic", "--synthetic-users", str(TINY.users)]
    argv += ["--synthetic-items", str(TINY.items), "--synthetic-interactions"]
    argv += [str(TINY.interactions), "--synthetic-seed", str(TINY.seed), "--json"]
    argv += ["--model", "evaluated", "--repository", str(version.parent.parent)]
    assert cli.main(argv) == 0
    (scored,) = json.loads(capsys.readouterr().out)["versions"]
    test = runs["evaluated"].test.model
    assert scored["refit"] is False and scored["recorded"]["hr@10"] == test.hr
    assert scored["hr@10"] == pytest.approx(test.hr, abs=1e-6)
    assert scored["ndcg@10"] == pytest.approx(test.ndcg, abs=1e-6)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kind", "mlp", "--recent-items", "5"], "--recent-* apply to --kind mf only"),
        (["--recent-blend", "1.5"], "--recent-blend must be in [0, 1]"),
        (["--recent-items", "-1"], "--recent-items must be at least 0"),
        (["--recent-decay", "0"], "--recent-decay must be in (0, 1]"),
    ],
)
def test_bad_flags_exit_2_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    argv = ["train", "--data", "synthetic", "--model", "m", "--repository", str(tmp_path)]
    assert cli.main([*argv, *flags]) == 2
    assert message in capsys.readouterr().err


def test_flags_reach_the_options() -> None:
    from training.cli import build_parser, config_from_args

    def options(*flags: str) -> RecentOptions:
        args = build_parser().parse_args(["--data", "synthetic", "--model", "m", *flags])
        return config_from_args(args).recent

    assert options() == RecentOptions()
    assert options("--no-recent").switched_off and options("--recent-items", "0").switched_off
    assert options("--recent-items", "5", "--recent-blend", "0.6", "--recent-decay", "0.8") == (
        RecentOptions(items=5, share=0.6, decay=0.8)
    )
    assert options("--kind", "neumf") == RecentOptions()  # off by kind, when the run chooses
