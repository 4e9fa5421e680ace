"""``recserve train``: flags, and a run from data to a published version.

Everything that can be checked before training is: each flag against its range (the message names
the flag), the model name, and the repository (resolved to an absolute path, then a writable
directory or one that can be created), so that a mistake costs seconds, not a training run.

Exit status: 0 published, 1 training failed (diverged), 2 bad input (flags, data or repository),
3 the ONNX parity check failed (nothing published).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from modelrepo import is_model_name
from modelrepo.access import publish_problem
from modelrepo.layout import MODEL_NAME_PATTERN, MODEL_NAME_RULE
from training.data import FORMATS, DataError, SyntheticSpec
from training.exits import EXIT_FAILED, EXIT_OK, EXIT_PARITY, EXIT_USAGE, command_parser, fail
from training.feature_flags import add_feature_arguments, feature_options
from training.features import FeatureFileError
from training.models import ModelConfig, kind_names
from training.pipeline import (
    SYNTHETIC_PRESETS,
    ParityError,
    PipelineConfig,
    run_pipeline,
    summary,
)
from training.recent import add_recent_arguments, recent_options
from training.retrieval_flags import add_retrieval_arguments, retrieval_options
from training.train import TrainConfig

REPOSITORY_ENV = "RECSERVE_MODEL_REPOSITORY"  # the server's: both agree where a shell sets it
DEFAULT_REPOSITORY = Path("model_repo")

DEFAULT_MODEL = ModelConfig()
DEFAULT_TRAIN = TrainConfig()
ConfigT = TypeVar("ConfigT", ModelConfig, TrainConfig)


def _tower(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected widths like 64,32,16, got {text!r}") from exc
    if not widths or min(widths) < 1:
        raise argparse.ArgumentTypeError(f"expected positive widths like 64,32,16, got {text!r}")
    return widths


def _bottom(text: str) -> tuple[int, ...]:
    """``--bottom``: like ``--tower``, and ``none`` for no hidden layer."""
    return () if text.strip().lower() == "none" else _tower(text)


_TRAIN_HELP: dict[str, str | None] = {
    "lr": "learning rate",
    "lr_decay": "learning-rate factor per epoch (1: constant)",
    "batch_size": None,
    "negatives": "sampled negatives per positive",
    "epochs": "most epochs",
    "patience": "epochs without improvement to stop",
    "seed": "seed of split and training",
    "unknown_rate": "share of ids replaced by the unknown-id row in training",
    "recency_weight": "weight a user's positives by their place in the user's history, latest "
    "most: the i-th of n weighs (i/n)^P, scaled to average 1 per user (0: all weigh 1)",
    "threads": "BLAS threads while training (default 1: more gain little and thrash on busy "
    "cores; 0: the library default)",
}
"""The ``TrainConfig`` fields set by a flag of the same name (``--batch-size``), with its help."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """What a numeric flag accepts, and how the refusal says it."""

    accepts: Callable[[Any], bool]
    says: str


def _at_least(low: int) -> Rule:
    return Rule(lambda value: value >= low, f"must be at least {low}")


_ABOVE_0 = Rule(lambda value: math.isfinite(value) and value > 0, "must be a finite number above 0")
_NOT_NEGATIVE = Rule(lambda value: math.isfinite(value) and value >= 0, "must be finite and >= 0")
_RATE = Rule(lambda value: 0.0 <= value < 1.0, "must be in [0, 1)")

FLAG_RULES: dict[str, Rule] = {
    "synthetic_users": _at_least(1),
    "synthetic_items": _at_least(2),
    "synthetic_interactions": _at_least(1),
    "embedding_dim": _at_least(1),
    "gmf_dim": _at_least(1),
    "l2": _NOT_NEGATIVE,
    "dropout": _RATE,
    "id_dropout": _RATE,
    "history_items": _at_least(0),
    "lr": _ABOVE_0,
    "lr_decay": Rule(lambda value: 0.0 < value <= 1.0, "must be in (0, 1]"),
    "batch_size": _at_least(1),
    "negatives": _at_least(1),
    "epochs": _at_least(1),
    "patience": _at_least(0),
    "threads": _at_least(0),
    "unknown_rate": _RATE,
    "recency_weight": _NOT_NEGATIVE,
}
"""Every numeric flag with a range, checked before any configuration is built: a refusal names
the flag and the value, where the configuration's own check would print the whole object."""


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def check_flags(args: argparse.Namespace) -> None:
    """Raise ValueError naming the first flag out of its range."""
    for dest, rule in FLAG_RULES.items():
        value = getattr(args, dest)
        if value is not None and not rule.accepts(value):
            raise ValueError(f"{_flag(dest)} {rule.says}, got {value}")


def default_repository() -> Path:
    """``RECSERVE_MODEL_REPOSITORY`` (what ``recserve serve`` reads) or ``model_repo``."""
    return Path(os.environ.get(REPOSITORY_ENV) or DEFAULT_REPOSITORY)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the data flags (``--data``, ``--format``, ``--synthetic-*``) to ``parser``: ``train``
    and ``evaluate`` take them alike, so that an evaluation reads the data a run trained on."""
    presets = ", ".join(SYNTHETIC_PRESETS)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        required=True,
        metavar="SOURCE",
        help=f"interactions file (CSV with header, u.data, ratings.dat) or one of: {presets}",
    )
    data.add_argument(
        "--format", choices=FORMATS, default=None, help="file format (default: detected)"
    )
    data.add_argument("--synthetic-users", type=int, metavar="N", help="synthetic: users")
    data.add_argument("--synthetic-items", type=int, metavar="N", help="synthetic: items")
    data.add_argument(
        "--synthetic-interactions", type=int, metavar="N", help="synthetic: interactions"
    )
    data.add_argument("--synthetic-seed", type=int, metavar="N", help="synthetic: generator seed")


def add_model_arguments(group: argparse._ArgumentGroup, model_help: str, note: str = "") -> None:
    """``--model NAME`` and ``--repository DIR`` (default: the server's repository setting)."""
    group.add_argument("--model", required=True, metavar="NAME", help=model_help)
    group.add_argument(
        "--repository",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"model repository root (default: ${REPOSITORY_ENV}, else ./{DEFAULT_REPOSITORY})"
        + note,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` flags to ``parser``."""
    m, t = DEFAULT_MODEL, DEFAULT_TRAIN
    add_data_arguments(parser)
    out = parser.add_argument_group("output")
    add_model_arguments(
        out,
        "model name to publish",
        "; checked before training: a writable directory, or one that can be created",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--kind", choices=kind_names(), default=m.kind, help="architecture")
    model.add_argument("--embedding-dim", type=int, default=m.embedding_dim, metavar="D")
    tower_help = f"MLP tower widths (default {','.join(map(str, m.tower))})"
    model.add_argument("--tower", type=_tower, default=m.tower, metavar="W,W,...", help=tower_help)
    model.add_argument("--gmf-dim", type=int, default=m.gmf_dim, metavar="D", help="NeuMF only")
    model.add_argument("--l2", type=float, default=m.l2, help="L2 weight")
    model.add_argument("--dropout", type=float, default=m.dropout, help="tower dropout rate")
    bottom_help = (
        f"dlrm only: hidden widths of the bottom MLP over numeric features, before its layer to "
        f"the embedding size; 'none' for that layer alone (default {','.join(map(str, m.bottom))})"
    )
    model.add_argument(
        "--bottom", type=_bottom, default=m.bottom, metavar="W,W,...", help=bottom_help
    )
    model.add_argument(
        "--id-dropout",
        type=float,
        default=m.id_dropout,
        help="dlrm only: share of training user ids replaced by the unknown row, features kept",
    )

    train = parser.add_argument_group("training")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default=t.optimizer)
    for name, help_text in _TRAIN_HELP.items():
        default = getattr(t, name)
        train.add_argument(_flag(name), type=type(default), default=default, help=help_text)
    train.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="publish the evaluated model (trained without the hold-outs) instead of one refit "
        "on all interactions for the chosen epochs",
    )
    add_feature_arguments(parser)
    add_retrieval_arguments(parser)
    add_recent_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The pipeline configuration the flags describe (ValueError when invalid); the repository
    is resolved to an absolute path."""
    check_flags(args)
    if not is_model_name(args.model):
        raise ValueError(
            f"model name {args.model!r} must match {MODEL_NAME_PATTERN.pattern} ({MODEL_NAME_RULE})"
        )
    return PipelineConfig(
        data=args.data,
        model_name=args.model,
        repository=(args.repository or default_repository()).resolve(),
        data_format=args.format,
        synthetic=synthetic_spec(args),
        model=_from_args(ModelConfig, args),
        train=_from_args(TrainConfig, args),
        quiet=args.quiet,
        refit=args.refit,
        features=feature_options(args),
        cold_start_users=args.cold_start_users,
        retrieval=retrieval_options(args),
        recent=recent_options(args),
    )


def synthetic_spec(args: argparse.Namespace) -> SyntheticSpec | None:
    """The synthetic set the data flags name (ValueError when the flags disagree), or None for a
    file."""
    spec: SyntheticSpec | None = None
    overrides = {
        "users": args.synthetic_users,
        "items": args.synthetic_items,
        "interactions": args.synthetic_interactions,
        "seed": args.synthetic_seed,
    }
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if args.data in SYNTHETIC_PRESETS:
        spec = dataclasses.replace(SYNTHETIC_PRESETS[args.data], **overrides)
    elif overrides:
        raise ValueError("--synthetic-* flags need --data " + " or ".join(SYNTHETIC_PRESETS))
    if spec is not None and spec.interactions < spec.users:
        raise ValueError(
            f"--synthetic-interactions must be at least the users ({spec.users:,}), "
            f"got {spec.interactions:,}"
        )
    return spec


def _from_args(cls: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """``cls`` with every field taken from the flag of the same name."""
    return cls(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(cls)})


def run(args: argparse.Namespace) -> int:
    """Run ``recserve train`` with parsed flags; returns the exit status."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        return fail(exc, EXIT_USAGE)
    problem = publish_problem(config.repository)
    if problem is not None:
        return fail(problem, EXIT_USAGE)
    try:
        result = run_pipeline(config)
    except tuple(_EXIT_CODES) as exc:
        return fail(exc, next(code for kind, code in _EXIT_CODES.items() if isinstance(exc, kind)))
    print(summary(result))
    return EXIT_OK


# How a run that fails ends: the exit status of each failure (README: exit codes).
_EXIT_CODES: dict[type[Exception], int] = {
    ParityError: EXIT_PARITY,
    DataError: EXIT_USAGE,
    FeatureFileError: EXIT_USAGE,
    FloatingPointError: EXIT_FAILED,
}


def build_parser() -> argparse.ArgumentParser:
    return command_parser("recserve train", TRAIN_HELP, add_arguments)


TRAIN_HELP = "Train a recommender, evaluate it, export it to ONNX and publish a version."


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
