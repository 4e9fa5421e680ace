"""The retrieval model a run publishes: its vectors rank as the model they come from, a refit
publishes other vectors than the evaluated model, ``none`` publishes none, an ``mf`` ranking
model is its own retrieval model, and the two-stage figures are recorded and mean what they say."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelrepo import RETRIEVAL_FILE, RetrievalVectors, read_version
from training.cli import main as train_main
from training.data import SyntheticSpec, synthetic
from training.evaluate_cli import main as evaluate_main
from training.models import ModelConfig, build_model
from training.pipeline import PipelineConfig, run_pipeline, summary
from training.retrieval import RetrievalOptions, dot_vectors
from training.split import Split, leave_one_out
from training.train import TrainConfig, train
from training.two_stage import DotIndex, Seen, evaluate_two_stage

TINY = SyntheticSpec(users=120, items=200, interactions=4000, seed=1)
NEUMF = ModelConfig(kind="neumf", embedding_dim=8, tower=(16, 8), gmf_dim=8)
MF = ModelConfig(kind="mf", embedding_dim=8)
TRAIN = TrainConfig(epochs=2, batch_size=512)
OPTIONS = RetrievalOptions(dim=6, epochs=2)


def run(repository: Path, **changes: Any) -> tuple[Any, Any]:
    """A tiny run; returns (the stored version, its retrieval record)."""
    values: dict[str, Any] = {
        "data": "synthetic",
        "model_name": "demo",
        "repository": repository,
        "synthetic": TINY,
        "model": NEUMF,
        "train": TRAIN,
        "quiet": True,
        "retrieval": OPTIONS,
    }
    result = run_pipeline(PipelineConfig(**{**values, **changes}), log=io.StringIO())
    stored = read_version(result.published.path)
    return stored, result


def tiny_split() -> Split:
    return leave_one_out(synthetic(TINY), seed=TRAIN.seed)


def shuffled(model_config: ModelConfig) -> Any:
    """A model whose weights are all random, biases and output layer included."""
    model = build_model(model_config, 30, 40, seed=5)
    rng = np.random.default_rng(9)
    for value in model.params.values():
        value[...] = rng.normal(size=value.shape).astype(np.float32)
    return model


def all_pairs(n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    users = np.repeat(np.arange(n_users), n_items)
    return users, np.tile(np.arange(n_items), n_users)


def assert_ranks_like(vectors: RetrievalVectors, logits: np.ndarray) -> None:
    """``logits`` [users, items] equal the dot products up to one constant per user, so both
    rank each user's items alike."""
    dots = vectors.user_vectors.astype(np.float64) @ vectors.item_vectors.T.astype(np.float64)
    shift = logits - dots
    np.testing.assert_allclose(shift, shift[:, :1].repeat(shift.shape[1], axis=1), atol=2e-4)
    for row in range(1, logits.shape[0]):
        assert np.argsort(-logits[row])[:10].tolist() == np.argsort(-dots[row])[:10].tolist()


def test_mf_vectors_fold_the_bias_and_rank_like_the_logit() -> None:
    model = shuffled(MF)
    vectors = dot_vectors(model)
    assert vectors.dim == MF.embedding_dim + 1
    np.testing.assert_array_equal(vectors.user_vectors[:, -1], 1.0)
    users, items = all_pairs(30, 40)
    logits = model.forward(users, items)[0].reshape(30, 40).astype(np.float64)
    assert_ranks_like(vectors, logits)


def test_neumf_vectors_are_its_gmf_branch() -> None:
    model = shuffled(NEUMF)
    vectors = dot_vectors(model)
    params = model.params
    gmf = (params["gmf_user_emb"][:, None, :] * params["gmf_item_emb"][None, :, :]) @ params[
        "w_out"
    ][: NEUMF.gmf_dim, 0]
    dots = vectors.user_vectors @ vectors.item_vectors.T
    np.testing.assert_allclose(dots, gmf, rtol=1e-5, atol=1e-5)


def test_an_mlp_has_no_dot_product() -> None:
    with pytest.raises(TypeError, match="not a dot product"):
        dot_vectors(build_model(ModelConfig(kind="mlp", embedding_dim=4, tower=(4,)), 3, 3, 0))


def onnx_logits(stored: Any, n_users: int, n_items: int) -> np.ndarray:
    """The published graph's logits for every (user row, item row)."""
    session = ort.InferenceSession(stored.model, providers=["CPUExecutionProvider"])
    signature = stored.manifest.signature
    users, items = all_pairs(n_users, n_items)
    feeds = {signature.inputs[0].name: users, signature.inputs[1].name: items}
    (p,) = session.run([signature.score], feeds)
    p = np.clip(np.asarray(p, np.float64), 1e-12, 1 - 1e-12)
    logits: np.ndarray = np.log(p / (1 - p)).reshape(n_users, n_items)
    return logits


def test_an_mf_ranker_publishes_its_own_vectors(tmp_path: Path) -> None:
    stored, result = run(tmp_path, model=MF, refit=False)
    vectors = stored.retrieval
    assert vectors is not None and vectors.dim == MF.embedding_dim + 1  # not OPTIONS.dim
    assert_ranks_like(vectors, onnx_logits(stored, vectors.n_user_rows, vectors.n_item_rows))
    record = stored.manifest.records()["retrieval"]
    assert record["kind"] == "mf" and "own vectors" in record["source"]
    assert record["epochs"] is None and record["train_seconds"] == 0.0
    # The same model: the same test figures, and retrieval holds all of the ranker's top 10.
    assert record["test"]["hr@10"] == pytest.approx(result.test.model.hr, abs=1e-9)
    assert record["test"]["ndcg@10"] == pytest.approx(result.test.model.ndcg, abs=1e-9)
    assert record["two_stage"]["recall_at_10"] == 1.0
    assert "recall@10 of the ranker's top 10 within the retrieval top 200: 1.0000" in summary(
        result
    )


def test_published_vectors_are_the_retrieval_model_trained_in_the_run(tmp_path: Path) -> None:
    stored, _ = run(tmp_path, refit=False)
    record = stored.manifest.records()["retrieval"]
    assert record["kind"] == "mf" and record["dim"] == OPTIONS.dim + 1
    assert record["refit"] is False and 1 <= record["epochs"] <= OPTIONS.epochs
    # The same model trained again: the published vectors rank like its NumPy scores.
    config = dataclasses.replace(TRAIN, epochs=OPTIONS.epochs, patience=OPTIONS.patience)
    mf = ModelConfig(kind="mf", embedding_dim=OPTIONS.dim)
    model = train(tiny_split(), mf, config, quiet=True).model
    vectors = stored.retrieval
    assert vectors is not None
    np.testing.assert_array_equal(vectors.item_vectors, dot_vectors(model).item_vectors)
    users, items = all_pairs(model.n_user_rows, model.n_item_rows)
    logits = model.forward(users, items)[0].reshape(model.n_user_rows, -1).astype(np.float64)
    assert_ranks_like(vectors, logits)


def test_refit_publishes_vectors_trained_on_every_interaction(tmp_path: Path) -> None:
    evaluated, _ = run(tmp_path / "a", refit=False)
    refit, _ = run(tmp_path / "b", refit=True)
    a, b = evaluated.manifest.records()["retrieval"], refit.manifest.records()["retrieval"]
    assert (a["refit"], b["refit"]) == (False, True)
    # The figures describe the evaluated model either way; the published vectors differ.
    assert a["test"] == b["test"] and a["epochs"] == b["epochs"]
    assert evaluated.retrieval is not None and refit.retrieval is not None
    assert not np.allclose(evaluated.retrieval.item_vectors, refit.retrieval.item_vectors)


def test_none_publishes_no_vectors(tmp_path: Path) -> None:
    stored, result = run(tmp_path, retrieval=RetrievalOptions(choice="none"))
    assert stored.retrieval is None
    assert RETRIEVAL_FILE not in stored.manifest.files
    assert not (stored.path / RETRIEVAL_FILE).exists()
    assert stored.manifest.records()["retrieval"] is None
    assert "retrieval: none published" in summary(result)


def test_gmf_is_refused_without_a_gmf_branch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--data", "synthetic", "--model", "m", "--repository", str(tmp_path)]
    assert train_main([*argv, "--kind", "mlp", "--retrieval", "gmf"]) == 2
    assert "--retrieval gmf needs --kind neumf" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_seen_masks_exactly_each_users_items() -> None:
    users = np.array([2, 0, 2, 2, 0])
    items = np.array([1, 3, 0, 4, 1])
    mask = Seen(users, items, n_users=4, n_items=5).mask(np.array([2, 1, 0]))
    expected = np.zeros((3, 5), dtype=bool)
    expected[0, [0, 1, 4]] = True
    expected[2, [1, 3]] = True
    np.testing.assert_array_equal(mask, expected)


def dot_ranker(index: DotIndex, sign: float) -> Any:
    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dots = np.einsum("ij,ij->i", index.users[users], index.items[items])
        result: np.ndarray = sign * dots
        return result

    return score


def random_index(split: Split) -> DotIndex:
    rng = np.random.default_rng(4)
    users = rng.normal(size=(split.n_users, 5)).astype(np.float32)
    return DotIndex(users, rng.normal(size=(split.n_items, 5)).astype(np.float32))


def test_two_stage_equals_exhaustive_when_retrieval_agrees_with_the_ranker() -> None:
    split = tiny_split()
    index = random_index(split)
    popularity = split.item_counts().astype(np.float64)
    figures = evaluate_two_stage(dot_ranker(index, 1.0), index, popularity, split, retrieve_n=10)
    assert figures["recall_at_10"] == 1.0 and figures["users"] == len(split.test)
    assert figures["full_catalog"]["two_stage"] == figures["full_catalog"]["exhaustive"]
    assert figures["sampled"]["two_stage"]["hr@10"] <= figures["sampled"]["exhaustive"]["hr@10"]


def test_recall_is_zero_when_retrieval_returns_the_rankers_worst() -> None:
    split = tiny_split()
    index = random_index(split)
    popularity = split.item_counts().astype(np.float64)
    figures = evaluate_two_stage(
        dot_ranker(index, -1.0), index, popularity, split, retrieve_n=10, max_users=50
    )
    assert figures["recall_at_10"] == 0.0 and figures["users"] == 50
    # Covering the whole catalog, two-stage is exhaustive again.
    whole = evaluate_two_stage(
        dot_ranker(index, -1.0), index, popularity, split, retrieve_n=split.n_items
    )
    assert whole["recall_at_10"] == 1.0
    assert whole["sampled"]["two_stage"] == whole["sampled"]["exhaustive"]


def evaluate_full_catalog(repository: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    argv = ["--data", "synthetic", "--synthetic-users", "120", "--synthetic-items", "200"]
    argv += ["--synthetic-interactions", "4000", "--synthetic-seed", "1", "--model", "demo"]
    status = evaluate_main([*argv, "--repository", str(repository), "--full-catalog", "--json"])
    out = capsys.readouterr()
    return status, out


def test_evaluate_reproduces_the_runs_two_stage_figures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored, _ = run(tmp_path, model=MF, refit=False)
    recorded = stored.manifest.records()["retrieval"]["two_stage"]
    status, out = evaluate_full_catalog(tmp_path, capsys)
    assert status == 0, out.err
    figures = json.loads(out.out)["two_stage"]
    assert figures["users"] == recorded["users"] == len(tiny_split().test)
    assert figures["recall_at_10"] == recorded["recall_at_10"] == 1.0
    for protocol in ("sampled", "full_catalog"):
        for mode, values in recorded[protocol].items():
            assert figures[protocol][mode] == pytest.approx(values, abs=1e-9), (protocol, mode)


def test_evaluate_full_catalog_needs_retrieval_vectors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(tmp_path, retrieval=RetrievalOptions(choice="none"))
    status, out = evaluate_full_catalog(tmp_path, capsys)
    assert status == 2 and "publishes no retrieval vectors" in out.err
