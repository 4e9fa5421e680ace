"""One training run from data to a published version.

load -> split -> train (early stopping on validation) -> evaluate on test against the popularity
baseline -> refit on all interactions for the chosen epochs (beside the training, see
``training.refit``) -> export ONNX -> parity check with ONNX Runtime -> publish the next version
through ``modelrepo.write_version``. A parity error above the tolerance publishes nothing.

The test figures describe the evaluated model, trained without the hold-outs; the published model
is the refit unless ``refit`` is off. The manifest's ``published_model`` record says which.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from modelrepo import (
    History,
    Manifest,
    PublishedVersion,
    Signature,
    Source,
    Vocabulary,
    write_version,
)
from modelrepo.layout import HISTORY_FILE as SEEN_FILE  # ours names the training log
from modelrepo.layout import list_versions
from training.cold_start import hold_out_users, report_lines, side_records
from training.data import ML1M, Format, Interactions, SyntheticSpec, load, synthetic
from training.evaluate import Metrics, Popularity, evaluate
from training.feature_inputs import FeatureOptions, prepare
from training.graph_check import graph_and_parity
from training.models import ModelConfig, feature_tables
from training.plot import CurveLabels, plot_history
from training.recent import RecentOptions, choose_recent, recent_lines
from training.refit import ConcurrentRefit, Refit
from training.retrieval import RetrievalOptions, build_retrieval, retrieval_lines
from training.split import Split, leave_one_out
from training.train import TrainConfig, TrainResult, scorer, train

SYNTHETIC_PRESETS: Mapping[str, SyntheticSpec] = {
    "synthetic": SyntheticSpec(),
    "synthetic-ml1m": ML1M,
}
HISTORY_FILE = "history.json"
CURVE_FILE = "training_curve.png"


class ParityError(RuntimeError):
    """ONNX Runtime and the NumPy model disagree by more than the tolerance."""

    def __init__(self, error: float, tolerance: float) -> None:
        super().__init__(
            f"ONNX parity check failed: max |ONNX - NumPy| = {error:.3g} > {tolerance:g}; "
            "nothing was published"
        )
        self.error = error
        self.tolerance = tolerance


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``recserve train`` can be told."""

    data: str
    model_name: str
    repository: Path = Path("model_repo")
    data_format: Format | None = None
    synthetic: SyntheticSpec | None = None  # overrides the preset named by ``data``
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    parity_tolerance: float = 1e-5
    quiet: bool = False
    refit: bool = True  # publish a model refit on all interactions, not the evaluated one
    features: FeatureOptions | None = None  # side-feature files (``training.feature_inputs``)
    cold_start_users: float = 0.0  # share of users held out of training (``training.cold_start``)
    retrieval: RetrievalOptions = field(default_factory=RetrievalOptions)  # its vectors
    recent: RecentOptions = field(default_factory=RecentOptions)  # mf: ``training.recent``


@dataclass(frozen=True)
class Evaluation:
    model: Metrics
    popularity: Metrics


@dataclass(frozen=True)
class PipelineResult:
    published: PublishedVersion
    test: Evaluation  # of the evaluated model, trained without the hold-outs
    parity_error: float

    @property
    def manifest(self) -> Manifest:
        """The published manifest (with the sha256 of every file of the version)."""
        return self.published.manifest


def load_data(config: PipelineConfig) -> Interactions:
    """The configured data set: a synthetic preset (with overrides) or a file."""
    if config.data in SYNTHETIC_PRESETS:
        return synthetic(config.synthetic or SYNTHETIC_PRESETS[config.data])
    return load(Path(config.data), config.data_format)


def _say(stream: TextIO, quiet: bool, message: str) -> None:
    if not quiet:
        stream.write(message + "\n")
        stream.flush()


def run_pipeline(config: PipelineConfig, *, log: TextIO | None = None) -> PipelineResult:
    """Train, evaluate, export, check and publish; raises ``ParityError`` before publishing."""
    stream = log if log is not None else sys.stderr
    started = time.perf_counter()
    data, cold = hold_out_users(load_data(config), config.cold_start_users, config.train.seed)
    skipped = data.skipped_report()
    if skipped:
        stream.write(f"warning: {data.name}: {skipped}\n")
    _say(
        stream,
        config.quiet,
        f"data {data.name}: {len(data):,} interactions, {data.n_users:,} users, "
        f"{data.n_items:,} items",
    )
    split = leave_one_out(data, seed=config.train.seed)
    _say(
        stream, config.quiet, "split " + ", ".join(f"{k} {v:,}" for k, v in split.summary().items())
    )

    side = prepare(config.features, data, split, cold.ids if cold else (), stream)
    popularity = Popularity(split.item_counts(), split.n_users)
    pop_validation = evaluate(popularity, split.validation) if len(split.validation) else None
    if pop_validation is not None:
        _say(
            stream,
            config.quiet,
            f"popularity baseline: val HR@10 {pop_validation.hr:.4f} "
            f"NDCG@10 {pop_validation.ndcg:.4f}",
        )
    everything = split.with_holdouts()
    with contextlib.ExitStack() as stack:
        beside = (
            stack.enter_context(
                ConcurrentRefit(everything, config.model, config.train, side.features)
            )
            if config.refit
            else None
        )
        on_best = beside.best_so_far if beside is not None else None
        result = train(split, config.model, config.train, quiet=config.quiet, log=stream,
                       on_best=on_best, features=side.features)  # fmt: skip
        recent = choose_recent(config.recent, config.model.kind, result.model, split)
        test = Evaluation(
            model=evaluate(scorer(result.model), split.test),
            popularity=evaluate(popularity, split.test),
        )
        refit = beside.result(result.best_epoch) if beside is not None else None
    extra = side_records(side, cold, result.model, popularity, data.item_ids, config.train.seed)
    published_model = recent.publish(refit.model, everything) if refit else result.model
    retrieval = build_retrieval(config.retrieval, split, everything if refit else None,
                                (result.model, published_model), config.train,
                                popularity.probability)  # fmt: skip
    extra = {**extra, "retrieval": retrieval.record, "recent_items": recent.record}
    if refit is not None:
        _say(
            stream,
            config.quiet,
            f"refit on all {everything.train_users.size:,} interactions for {refit.epochs} "
            f"epochs: final loss {refit.losses[-1]:.4f}",
        )

    signature = published_model.signature
    graph, parity = graph_and_parity(published_model, config.model.kind, split)
    if not parity <= config.parity_tolerance:
        raise ParityError(parity, config.parity_tolerance)
    manifest = build_manifest(config, data, split, result, test, pop_validation,
                              signature=signature, parity=parity,
                              seconds=time.perf_counter() - started,
                              published_model=published_record(split, result, refit),
                              extra=extra)  # fmt: skip
    version = next_version(config.repository, config.model_name)
    labels = CurveLabels(config.model_name, version, data.name)
    extra_files = _extra_files(result, refit, pop_validation, labels, stream)
    extra_files[SEEN_FILE] = seen_history(everything if refit is not None else split).to_bytes()
    published = write_version(
        config.repository,
        config.model_name,
        manifest,
        graph,
        {**vocabularies(signature, data), **side.vocabularies},
        extra_files,
        feature_tables(published_model.side_features),
        retrieval=retrieval.vectors,
    )
    if published.version != version:
        stream.write(
            f"warning: another run published version {version} meanwhile; this one is "
            f"{published.version}, but its {CURVE_FILE} is titled version {version}\n"
        )
    return PipelineResult(published, test, parity)


def next_version(repository: Path, model_name: str) -> int:
    """The number the next publication of ``model_name`` will claim, barring a concurrent one.

    The curve is drawn before publication (a published directory is never written into), so its
    title takes the number ``write_version`` claims: the first after the highest.
    """
    model_dir = repository / model_name
    return max(list_versions(model_dir), default=0) + 1 if model_dir.is_dir() else 1


def published_record(split: Split, result: TrainResult, refit: Refit | None) -> dict[str, Any]:
    """What the published model was trained on, and which figures describe it."""
    if refit is None:
        return {
            "trained_on": "training split (validation and test hold-outs excluded)",
            "interactions": int(split.train_users.size),
            "epochs": result.best_epoch,
            "refit": False,
            "test_metrics_describe": "this model",
        }
    return {
        "trained_on": "all interactions",
        "interactions": int(split.train_users.size + len(split.validation) + len(split.test)),
        "epochs": refit.epochs,
        "refit": True,
        "test_metrics_describe": (
            "the evaluated model (same seed and hyper-parameters, trained without the hold-outs, "
            "which chose the epochs); the hold-outs cannot measure this one"
        ),
    }


def seen_history(trained_on: Split) -> History:
    """The (user, item) pairs the published model was trained on, by embedding row: what the
    server leaves out of a user's recommendations (``exclude_seen``)."""
    return History.from_pairs(
        trained_on.train_users + 1,
        trained_on.train_items + 1,
        trained_on.n_users + 1,
        trained_on.n_items + 1,
    )


def vocabularies(signature: Signature, data: Interactions) -> dict[str, Vocabulary]:
    """The vocabulary of every id input, by the file name the signature gives it."""
    ids = {Source.USER: data.user_ids, Source.ITEM: data.item_ids}
    return {
        spec.vocabulary: Vocabulary(ids[spec.source])
        for spec in signature.inputs
        if spec.vocabulary is not None and spec.source in ids  # features': ``feature_inputs``
    }


def _extra_files(
    result: TrainResult,
    refit: Refit | None,
    pop_validation: Metrics | None,
    labels: CurveLabels,
    stream: TextIO,
) -> dict[str, bytes]:
    """The training history and, where matplotlib is installed, the training curve."""
    history = result.history_json()
    if refit is not None:
        history["refit"] = {"epochs": refit.epochs, "losses": refit.losses}
    text = json.dumps(_finite(history), indent=2) + "\n"
    files = {HISTORY_FILE: text.encode("utf-8")}
    baseline = (pop_validation.hr, pop_validation.ndcg) if pop_validation else None
    curve = plot_history(
        result.history, chosen=result.best_epoch, labels=labels, baseline=baseline, stream=stream
    )
    if curve is not None:
        files[CURVE_FILE] = curve
    return files


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None, so the JSON is standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _lift(model: Metrics, baseline: Metrics) -> dict[str, float]:
    return {
        f"hr@{model.k}": model.hr - baseline.hr,
        f"ndcg@{model.k}": model.ndcg - baseline.ndcg,
    }


def build_manifest(
    config: PipelineConfig,
    data: Interactions,
    split: Split,
    result: TrainResult,
    test: Evaluation,
    pop_validation: Metrics | None,
    *,
    signature: Signature,
    parity: float,
    seconds: float,
    published_model: dict[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Manifest:
    """The version's manifest: the kind and signature, and what the run records beside them."""
    model_config = dataclasses.asdict(config.model)
    model_config["tower"] = list(config.model.tower)
    validation: dict[str, Any] = {"best_epoch": result.best_epoch}
    if result.best_validation is not None:
        validation["model"] = result.best_validation.as_dict()
    if pop_validation is not None:
        validation["popularity"] = pop_validation.as_dict()
    records = {
        "hyperparameters": model_config,
        "dataset": {**data.describe(), "size": len(data), "split": split.summary()},
        "metrics": {
            "protocol": (
                "leave-one-out (He et al. 2017): the latest interaction per user ranked "
                f"against {split.test.items.shape[1] - 1} sampled items the user never "
                "interacted with"
            ),
            "test": {
                "model": test.model.as_dict(),
                "popularity": test.popularity.as_dict(),
                "lift": _lift(test.model, test.popularity),
            },
            "validation": validation,
        },
        "published_model": published_model,
        **(extra or {}),  # side features and cold start, when the run has them
        "parity_max_abs_error": parity,
        "training": {
            **dataclasses.asdict(config.train),
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "stopped_early": result.stopped_early,
            "train_seconds": round(result.seconds, 3),
            "total_seconds": round(seconds, 3),
        },
    }
    return Manifest(
        kind=config.model.kind,
        signature=signature,
        created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **_finite(records),
    )


def summary(result: PipelineResult) -> str:
    """A short human-readable report of a run."""
    model, pop = result.test.model, result.test.popularity
    k = model.k
    row = "  {:<14}{:.4f}  {:.4f}   {:.4f}  {:.4f}"
    records = result.manifest.records()
    training, published = records["training"], records["published_model"]
    evaluated = "published model"
    if published["refit"]:
        evaluated = "evaluated model (without the hold-outs)"
    lines = [
        f"published {result.published.model_name} version {result.published.version} "
        f"-> {result.published.path}",
        f"trained {training['epochs_run']} epochs in {training['train_seconds']:.1f}s "
        f"(best epoch {training['best_epoch']}); total {training['total_seconds']:.1f}s",
        f"published model: trained on {published['trained_on']} "
        f"({published['interactions']:,}) for {published['epochs']} epochs",
        f"test figures describe the {evaluated}",
        f"test ({model.users:,} users)   HR@{k}   NDCG@{k}  AUC     log loss",
        row.format("model", model.hr, model.ndcg, model.auc, model.log_loss),
        row.format("popularity", pop.hr, pop.ndcg, pop.auc, pop.log_loss),
        f"  lift           {model.hr - pop.hr:+.4f} {model.ndcg - pop.ndcg:+.4f}",
        f"parity max |ONNX - NumPy| = {result.parity_error:.2e}",
        *report_lines(records),
        *retrieval_lines(records),
        *recent_lines(records),
    ]
    if CURVE_FILE in result.manifest.files:
        lines.append(f"training curve: {result.published.path / CURVE_FILE}")
    return "\n".join(lines)
