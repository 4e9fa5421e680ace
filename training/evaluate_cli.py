"""``recserve evaluate``: score published versions on a dataset, under training's own protocol.

A version is judged by what it publishes, not by the run that made it: its ONNX graph run by ONNX
Runtime, fed through its own vocabularies (an id it does not hold goes to row 0, and is counted).
The candidates are those ``recserve train`` reports on: the same leave-one-out split (seed and
negatives as the version's run recorded them, unless flags say otherwise) and the popularity
baseline on the same candidates. On the data a version was trained on, a version published as the
model its run evaluated (``recserve train --no-refit``) reproduces the run's test report; one refit
on every interaction saw the hold-outs, and is said to. ``--against`` scores a second version on
the very same candidates.

Exit status: 0 evaluated, 2 bad flags, data, repository or version.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from modelrepo import (
    Source,
    StoredVersion,
    VersionError,
    is_model_name,
    read_version,
    table_type,
)
from modelrepo.access import read_problem
from modelrepo.layout import MODEL_NAME_PATTERN, MODEL_NAME_RULE, list_versions
from training.cli import (
    FLAG_RULES,
    add_data_arguments,
    add_model_arguments,
    default_repository,
    synthetic_spec,
)
from training.data import Interactions, load, synthetic
from training.evaluate import Metrics, Popularity, evaluate
from training.exits import EXIT_OK, EXIT_USAGE, command_parser, fail, positive_int
from training.pipeline import SYNTHETIC_PRESETS
from training.split import Split, leave_one_out
from training.train import TrainConfig
from training.two_stage import DotIndex, evaluate_two_stage, report_lines

DEFAULT_NEGATIVES = 99  # what leave_one_out holds out against when the version records nothing
RUN_ROWS = 1 << 16  # rows per ONNX Runtime call: bounds the memory of a large candidate set
_ID_SOURCES = (Source.USER, Source.ITEM)
_SYNTHETIC_FLAGS = ("synthetic_users", "synthetic_items", "synthetic_interactions")


class EvaluationError(ValueError):
    """The version cannot be evaluated as asked; the message is one line for the operator."""


@dataclass(frozen=True)
class Scored:
    """One version's figures on the candidates, beside those its run recorded when comparable."""

    version: int
    metrics: Metrics
    recorded: dict[str, float] | None
    unknown_users: int
    unknown_items: int
    refit: bool  # published after a refit on every interaction: the record is of another model


@dataclass(frozen=True)
class Report:
    model: str
    data: Interactions
    seed: int
    negatives: int
    scored: tuple[Scored, ...]
    popularity: Metrics
    two_stage: dict[str, Any] | None = None  # --full-catalog: ``training.two_stage``


def _step(value: Any, key: str) -> Any:
    return value.get(key) if isinstance(value, Mapping) else None


def _at(records: Mapping[str, Any], *keys: str) -> Any:
    """``records[k1][k2]...``, or None where a step is missing or not an object."""
    return functools.reduce(_step, keys, records)


class OnnxScorer:
    """A version's graph under ONNX Runtime, scoring dense (user, item) indices of ``data``."""

    def __init__(self, stored: StoredVersion, data: Interactions, threads: int) -> None:
        signature = stored.manifest.signature
        user, item = signature.one_from(Source.USER), signature.one_from(Source.ITEM)
        if user is None or item is None:
            raise EvaluationError(
                f"version {stored.path.name} takes no user or no item input (inputs "
                f"{[s.name for s in signature.inputs]}); evaluate scores (user, item) pairs"
            )
        self.user_input, self.item_input, self.output = user.name, item.name, signature.score
        # A feature model's other inputs, as the server fills them for a request by id: the rows
        # of the version's feature tables, the defaults for request-time context.
        self.side = [spec for spec in signature.inputs if spec.source not in _ID_SOURCES]
        self.columns = {
            spec.name: stored.tables[str(spec.table)][spec.name]
            for spec in self.side
            if spec.source is not Source.CONTEXT
        }
        # Dense index -> the version's row, through the version's own vocabularies.
        self.user_rows, unknown_users = stored.vocabulary(user).rows(data.user_ids)
        self.item_rows, unknown_items = stored.vocabulary(item).rows(data.item_ids)
        self.unknown_user_ids, self.unknown_item_ids = set(unknown_users), set(unknown_items)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            stored.model, options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        user_rows, item_rows = self.user_rows[users], self.item_rows[items]
        parts = [
            self.session.run(
                [self.output],
                self._feeds(
                    user_rows[start : start + RUN_ROWS], item_rows[start : start + RUN_ROWS]
                ),
            )[0]
            for start in range(0, users.size, RUN_ROWS)
        ]
        flat = [np.asarray(part, dtype=np.float64).reshape(-1) for part in parts]
        return np.concatenate(flat) if flat else np.zeros(0)

    def _feeds(self, user_rows: np.ndarray, item_rows: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {self.user_input: user_rows, self.item_input: item_rows}
        for spec in self.side:
            if spec.source is Source.CONTEXT:
                dtype, shape = table_type(spec, user_rows.size)
                feeds[spec.name] = np.zeros(shape, dtype=dtype)
            else:
                rows = user_rows if spec.source is Source.USER_TABLE else item_rows
                feeds[spec.name] = self.columns[spec.name].take(rows, axis=0)
        return feeds

    def unknown(self, data: Interactions, split: Split) -> tuple[int, int]:
        """Held-out users, and distinct candidate items, the version has no row for."""
        users = {data.user_ids[u] for u in split.test.users.tolist()}
        items = {data.item_ids[i] for i in np.unique(split.test.items).tolist()}
        return len(users & self.unknown_user_ids), len(items & self.unknown_item_ids)


def recorded_test(
    stored: StoredVersion, data: Interactions, seed: int, negatives: int, k: int
) -> dict[str, float] | None:
    """The test figures the version's run reported, when they describe these candidates: the same
    data (content hash), split seed and negatives, at the same cut-off."""
    records = stored.manifest.records()
    same = (
        _at(records, "dataset", "content_hash") == data.content_hash
        and _at(records, "training", "seed") == seed
        and _at(records, "dataset", "split", "negatives_per_holdout") == negatives
    )
    model = _at(records, "metrics", "test", "model")
    keys = (f"hr@{k}", f"ndcg@{k}", "auc")
    if not same or not isinstance(model, Mapping) or not all(key in model for key in keys):
        return None
    return {key: float(model[key]) for key in keys}


def load_data(args: argparse.Namespace) -> Interactions:
    """The interactions the data flags name (ValueError for bad flags, DataError for bad data)."""
    for dest in _SYNTHETIC_FLAGS:
        value = getattr(args, dest)
        if value is not None and not FLAG_RULES[dest].accepts(value):
            raise ValueError(f"--{dest.replace('_', '-')} {FLAG_RULES[dest].says}, got {value}")
    spec = synthetic_spec(args)
    if args.data in SYNTHETIC_PRESETS:
        return synthetic(spec or SYNTHETIC_PRESETS[args.data])
    return load(Path(args.data), args.format)


def read(root: Path, model: str, version: int | None) -> StoredVersion:
    """The version (the latest when None) of ``model``, read and checked."""
    try:
        versions = list_versions(root / model)
    except OSError:
        versions = ()
    if not versions:
        raise EvaluationError(f"model {model!r} has no versions in {root}")
    chosen = versions[-1] if version is None else version
    if chosen not in versions:
        raise EvaluationError(f"model {model!r} has no version {chosen} (it has {list(versions)})")
    try:
        return read_version(root / model / str(chosen))
    except VersionError as exc:
        raise EvaluationError(f"model {model!r} version {chosen} cannot be read: {exc}") from None


def run_evaluation(args: argparse.Namespace) -> Report:
    """Read the versions, load the data, split it as training did, score every version."""
    root = (args.repository or default_repository()).resolve()
    problem = read_problem(root)
    if problem is not None:
        raise EvaluationError(problem)
    stored = [read(root, args.model, args.version)]
    if args.against is not None:
        stored.append(read(root, args.model, args.against))
    data = load_data(args)
    records = stored[0].manifest.records()
    seed = args.seed if args.seed is not None else _at(records, "training", "seed")
    seed = seed if isinstance(seed, int) else TrainConfig().seed
    negatives = _at(records, "dataset", "split", "negatives_per_holdout")
    negatives = negatives if isinstance(negatives, int) else DEFAULT_NEGATIVES
    split = leave_one_out(data, seed=seed, negatives=negatives)
    scored = []
    for version in stored:
        scorer = OnnxScorer(version, data, args.threads)
        metrics = evaluate(scorer, split.test, args.k)
        recorded = recorded_test(version, data, seed, negatives, args.k)
        refit = _at(version.manifest.records(), "published_model", "refit") is True
        unknown_users, unknown_items = scorer.unknown(data, split)
        number = int(version.path.name)
        scored.append(Scored(number, metrics, recorded, unknown_users, unknown_items, refit))
    popularity = evaluate(Popularity(split.item_counts(), split.n_users), split.test, args.k)
    two_stage = None
    if args.full_catalog:
        two_stage = full_catalog(stored[0], OnnxScorer(stored[0], data, args.threads), split, args)
    return Report(args.model, data, seed, negatives, tuple(scored), popularity, two_stage)


def full_catalog(
    stored: StoredVersion, scorer: OnnxScorer, split: Split, args: argparse.Namespace
) -> dict[str, Any]:
    """Both modes on the version as published (its graph, its retrieval vectors) and popularity,
    on the whole catalog and on the sampled candidates (``training.two_stage``)."""
    if stored.retrieval is None:
        raise EvaluationError(
            f"version {stored.path.name} publishes no retrieval vectors: --full-catalog compares "
            "two-stage with exhaustive ranking through them"
        )
    index = DotIndex.from_rows(stored.retrieval, scorer.user_rows, scorer.item_rows)
    popularity = split.item_counts().astype(np.float64)
    return evaluate_two_stage(
        scorer, index, popularity, split, retrieve_n=args.retrieve_n, k=args.k
    )


# -- showing -------------------------------------------------------------------------------------


def _figures(metrics: Metrics) -> dict[str, float]:
    return {f"hr@{metrics.k}": metrics.hr, f"ndcg@{metrics.k}": metrics.ndcg, "auc": metrics.auc}


def as_json(report: Report) -> dict[str, Any]:
    """The report for machines: one object per version, the baseline, and what was held out."""
    return {
        "model": report.model,
        "dataset": report.data.describe(),
        "test": {
            "users": report.popularity.users,
            "negatives_per_holdout": report.negatives,
            "seed": report.seed,
            "k": report.popularity.k,
        },
        "versions": [
            {
                "version": s.version,
                **_figures(s.metrics),
                "recorded": s.recorded,
                "refit": s.refit,
                "unknown_users": s.unknown_users,
                "unknown_items": s.unknown_items,
            }
            for s in report.scored
        ],
        "popularity": _figures(report.popularity),
        "two_stage": report.two_stage,
    }


def table(report: Report) -> str:
    """The report for people: a row per version (and its run's record), then the baseline."""
    k = report.popularity.k
    row = "{:<22}{:>8.4f}{:>10.4f}{:>8.4f}"
    lines = [
        f"model {report.model} on {report.data.name} ({len(report.data):,} interactions)",
        f"test: the latest interaction of {report.popularity.users:,} users, each ranked against "
        f"{report.negatives} sampled items (split seed {report.seed})",
        f"{'':<22}{f'HR@{k}':>8}{f'NDCG@{k}':>10}{'AUC':>8}",
    ]
    for s in report.scored:
        lines.append(row.format(f"version {s.version}", *_figures(s.metrics).values()))
        if s.recorded is not None:
            label = "  its run's evaluated" if s.refit else "  as its run reported"
            lines.append(row.format(label, *s.recorded.values()))
    lines.append(row.format("popularity", *_figures(report.popularity).values()))
    if report.two_stage is not None:
        lines += [
            f"version {report.scored[0].version}, two-stage:",
            *report_lines(report.two_stage, k),
        ]
    for s in report.scored:
        if s.refit and s.recorded is not None:
            lines.append(
                f"version {s.version} was refit on every interaction of this data, hold-outs "
                "included: its figures here are optimistic; its run's evaluated model (trained "
                "without them, published with --no-refit) is what the hold-outs measure"
            )
        if s.unknown_users or s.unknown_items:
            lines.append(
                f"version {s.version} has no row for {s.unknown_users:,} of these users and "
                f"{s.unknown_items:,} of these items: scored as the unknown id (row 0)"
            )
    return "\n".join(lines)


# -- the command ---------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` flags to ``parser``."""
    which = parser.add_argument_group("version")
    add_model_arguments(which, "model name")
    which.add_argument(
        "--version", type=positive_int, metavar="N", help="version (default: latest)"
    )
    which.add_argument(
        "--against", type=positive_int, metavar="N", help="a second version, on the same candidates"
    )
    add_data_arguments(parser)
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--k", type=positive_int, default=10, help="cut-off of HR@K and NDCG@K")
    protocol.add_argument(
        "--seed", type=int, default=None, help="split seed (default: the version's run's)"
    )
    protocol.add_argument(
        "--threads", type=int, default=1, help="ONNX Runtime threads (0: one per core)"
    )
    protocol.add_argument(
        "--full-catalog",
        action="store_true",
        help="also rank each held-out item against every item the user has not seen, "
        "exhaustively, two-stage through the version's retrieval vectors, and by popularity",
    )
    protocol.add_argument(
        "--retrieve-n", type=positive_int, default=200, help="two-stage: candidates retrieved"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object, for machines")


def run(args: argparse.Namespace) -> int:
    """Run ``recserve evaluate`` with parsed flags; returns the exit status."""
    if not is_model_name(args.model):
        rule = f"must match {MODEL_NAME_PATTERN.pattern} ({MODEL_NAME_RULE})"
        return fail(f"model name {args.model!r} {rule}", EXIT_USAGE)
    if args.threads < 0:
        return fail(f"--threads must be at least 0, got {args.threads}", EXIT_USAGE)
    try:
        report = run_evaluation(args)
    except ValueError as exc:  # EvaluationError, DataError, a flag out of range
        return fail(exc, EXIT_USAGE)
    print(json.dumps(as_json(report), indent=2) if args.json else table(report))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    return command_parser("recserve evaluate", EVALUATE_HELP, add_arguments)


EVALUATE_HELP = "Evaluate published versions on a dataset with the protocol of training."


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
