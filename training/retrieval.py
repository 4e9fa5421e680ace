"""The retrieval model a run publishes beside the ranking model: a dot product of a user vector
and an item vector, so that the server can pick a few hundred candidates out of a large catalog
with one matrix product (or a nearest-neighbour index) before the ranking model sees them.

Where the vectors come from (``--retrieval``):

- a ranking model that is itself a dot product (``mf``) is its own retrieval model: its vectors
  rank exactly as it does, and nothing more is trained;
- ``gmf`` (NeuMF only): the GMF branch of the ranking model, free but weaker alone;
- otherwise (``mf``, and ``auto`` for every other kind) a biased matrix factorisation trained
  after the ranking model in the same run, on the same interactions, with early stopping on the
  same validation hold-outs and, like the ranking model, refit on every interaction beside its
  training (``training.refit``) unless the run publishes without a refit.

A bias is folded into an extra column (user side 1.0, item side the item's bias times its output
weight); the user's own bias and the output bias shift every item of a user alike, so the dot
product ranks a user's items exactly as the model's logit does. The record in the manifest says
what the retrieval model is, its test figures on the ranking model's candidates, and the
two-stage figures of :mod:`training.two_stage` for the evaluated pair.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modelrepo import RetrievalVectors
from training.evaluate import Metrics, Scorer, evaluate
from training.models import MF, Model, ModelConfig, NeuMF
from training.refit import ConcurrentRefit
from training.split import Split
from training.train import TrainConfig, scorer, train
from training.two_stage import DotIndex, evaluate_two_stage, report_lines

RetrievalChoice = Literal["auto", "mf", "gmf", "none"]
RETRIEVAL_CHOICES: tuple[RetrievalChoice, ...] = ("auto", "mf", "gmf", "none")
MAX_EVAL_ROWS = 4_000_000
"""(user, item) pairs the two-stage figures of a run score at most (a sample of test users)."""
MIN_EVAL_USERS = 64


@dataclass(frozen=True)
class RetrievalOptions:
    """What ``recserve train`` is told about the retrieval model.

    ``dim`` and ``epochs`` (the most; early stopping picks fewer) size a retrieval model trained
    for the purpose; a ranking model's own vectors keep its size.
    """

    choice: RetrievalChoice = "auto"
    dim: int = 64
    epochs: int = 10
    patience: int = 2
    retrieve_n: int = 200

    def __post_init__(self) -> None:
        if self.choice not in RETRIEVAL_CHOICES:
            raise ValueError(f"--retrieval must be one of {RETRIEVAL_CHOICES}, got {self.choice}")
        if min(self.dim, self.epochs, self.retrieve_n) < 1 or self.patience < 0:
            raise ValueError(f"invalid retrieval options: {self}")

    def source(self, ranker_kind: str) -> Literal["ranker", "gmf", "mf"] | None:
        """Where the vectors come from for a ranking model of ``ranker_kind`` (None: none)."""
        if self.choice == "none":
            return None
        if ranker_kind == "mf":
            return "ranker"
        if self.choice == "gmf":
            if ranker_kind != "neumf":
                raise ValueError(f"--retrieval gmf needs --kind neumf, got --kind {ranker_kind}")
            return "gmf"
        return "mf"


def dot_vectors(model: Model) -> RetrievalVectors:
    """The retrieval vectors of a dot-product model, by embedding row (see the module
    docstring): ``mf`` with its item bias folded in, or NeuMF's GMF branch."""
    params = model.params
    w_out = params["w_out"][:, 0]
    if isinstance(model, MF):
        dim = params["user_emb"].shape[1]
        users = params["user_emb"] * w_out[:dim]
        items = params["item_emb"]
        ones = np.ones((users.shape[0], 1), np.float32)
        users = np.concatenate([users, ones], axis=1)
        items = np.concatenate([items, params["item_bias"] * w_out[dim + 1]], axis=1)
    elif isinstance(model, NeuMF):
        dim = params["gmf_user_emb"].shape[1]
        users, items = params["gmf_user_emb"] * w_out[:dim], params["gmf_item_emb"]
    else:
        raise TypeError(f"a {model.kind} model is not a dot product")
    return RetrievalVectors(
        np.ascontiguousarray(users, dtype=np.float32), np.ascontiguousarray(items, np.float32)
    )


def dot_scorer(vectors: RetrievalVectors) -> Scorer:
    """Scores of dense (user, item) indices by the vectors' dot products (rows are index + 1)."""

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dots = np.einsum(
            "ij,ij->i", vectors.user_vectors[users + 1], vectors.item_vectors[items + 1]
        )
        result: np.ndarray = 1.0 / (1.0 + np.exp(-dots.astype(np.float64)))
        return result

    return score


@dataclass(frozen=True)
class Retrieval:
    """What a run publishes for retrieval: the vectors, and the manifest's record of them."""

    vectors: RetrievalVectors | None
    record: dict[str, Any] | None


@dataclass(frozen=True)
class _Trained:
    evaluated: Model
    published: Model
    epochs: int
    seconds: float


def _train_mf(
    options: RetrievalOptions, split: Split, everything: Split | None, config: TrainConfig
) -> _Trained:
    """A biased MF on ``split`` (early stopping on its validation), and its refit on
    ``everything`` beside it when given."""
    started = time.perf_counter()
    model_config = ModelConfig(kind="mf", embedding_dim=options.dim)
    config = dataclasses.replace(config, epochs=options.epochs, patience=options.patience)
    if everything is None:
        result = train(split, model_config, config, quiet=True)
        model = result.model
        return _Trained(model, model, result.best_epoch, time.perf_counter() - started)
    with ConcurrentRefit(everything, model_config, config) as beside:
        result = train(split, model_config, config, quiet=True, on_best=beside.best_so_far)
        refit = beside.result(result.best_epoch)
    return _Trained(result.model, refit.model, result.best_epoch, time.perf_counter() - started)


def build_retrieval(
    options: RetrievalOptions,
    split: Split,
    everything: Split | None,
    ranker: tuple[Model, Model],
    config: TrainConfig,
    popularity: np.ndarray,
) -> Retrieval:
    """The retrieval vectors for the (evaluated, published) ranking models and their record.

    ``everything`` is the split the published ranking model was refit on (None: no refit);
    ``popularity`` scores each item for the full-catalog baseline.
    """
    source = options.source(ranker[0].kind)
    if source is None:
        return Retrieval(None, None)
    evaluated_ranker, published_ranker = ranker
    if source == "mf":
        trained = _train_mf(options, split, everything, config)
    else:
        trained = _Trained(evaluated_ranker, published_ranker, 0, 0.0)
    evaluated = dot_vectors(trained.evaluated)
    test = evaluate(dot_scorer(evaluated), split.test)
    rows = np.arange(1, split.n_users + 1), np.arange(1, split.n_items + 1)
    max_users = max(MIN_EVAL_USERS, MAX_EVAL_ROWS // split.n_items)
    started = time.perf_counter()
    two_stage = evaluate_two_stage(
        scorer(evaluated_ranker),
        DotIndex.from_rows(evaluated, *rows),
        popularity,
        split,
        retrieve_n=options.retrieve_n,
        max_users=max_users,
        seed=config.seed,
    )
    record = {
        "kind": "mf" if source in ("mf", "ranker") else "gmf",
        "source": {
            "ranker": "the ranking model's own vectors (it is a dot product)",
            "gmf": "the GMF branch of the NeuMF ranking model",
            "mf": "a matrix factorisation trained in the run on the same interactions",
        }[source],
        "dim": evaluated.dim,
        "bias_column": source != "gmf",
        "epochs": trained.epochs if source == "mf" else None,
        "refit": everything is not None,
        "train_seconds": round(trained.seconds, 3),
        "evaluate_seconds": round(time.perf_counter() - started, 3),
        "test": _figures(test),
        "two_stage": two_stage,
    }
    return Retrieval(dot_vectors(trained.published), record)


def _figures(metrics: Metrics) -> dict[str, float]:
    return {f"hr@{metrics.k}": metrics.hr, f"ndcg@{metrics.k}": metrics.ndcg}


def retrieval_lines(records: dict[str, Any]) -> list[str]:
    """The run report's lines on the retrieval model (none when the run published none)."""
    record = records.get("retrieval")
    if not isinstance(record, dict):
        return ["retrieval: none published"]
    epochs = f", {record['epochs']} epochs" if record.get("epochs") else ""
    test = record["test"]
    return [
        f"retrieval: {record['kind']}, {record['dim']} dims{epochs} ({record['source']}; "
        f"trained in {record['train_seconds']:.1f}s, two-stage figures in "
        f"{record['evaluate_seconds']:.1f}s): test HR@10 {test['hr@10']:.4f} "
        f"NDCG@10 {test['ndcg@10']:.4f}",
        *report_lines(record["two_stage"]),
    ]
