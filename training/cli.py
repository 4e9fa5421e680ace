"""``recserve train``: flags, and a run from data to a published version.

Exit status: 0 published, 1 training failed (diverged), 2 bad input (flags or data),
3 the ONNX parity check failed (nothing published).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from modelrepo import is_model_name
from modelrepo.layout import MODEL_NAME_PATTERN, MODEL_NAME_RULE
from training.data import FORMATS, DataError, SyntheticSpec
from training.models import ModelConfig, kind_names
from training.pipeline import (
    SYNTHETIC_PRESETS,
    ParityError,
    PipelineConfig,
    run_pipeline,
    summary,
)
from training.train import TrainConfig

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PARITY = 0, 1, 2, 3

DEFAULT_MODEL = ModelConfig(kind="neumf")
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


_TRAIN_HELP: dict[str, str | None] = {
    "lr": "learning rate",
    "batch_size": None,
    "negatives": "sampled negatives per positive",
    "epochs": "most epochs",
    "patience": "epochs without improvement to stop",
    "seed": "seed of split and training",
    "unknown_rate": "share of ids replaced by the unknown-id row in training",
    "threads": "BLAS threads while training (default 1: more gain little and thrash on busy "
    "cores; 0: the library default)",
}
"""The ``TrainConfig`` fields set by a flag of the same name (``--batch-size``), with its help."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` flags to ``parser``."""
    m, t = DEFAULT_MODEL, DEFAULT_TRAIN
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

    out = parser.add_argument_group("output")
    out.add_argument("--model", required=True, metavar="NAME", help="model name to publish")
    out.add_argument(
        "--repository", type=Path, default=Path("model_repo"), help="model repository root"
    )

    model = parser.add_argument_group("model")
    model.add_argument("--kind", choices=kind_names(), default=m.kind, help="architecture")
    model.add_argument("--embedding-dim", type=int, default=m.embedding_dim, metavar="D")
    tower_help = f"MLP tower widths (default {','.join(map(str, m.tower))})"
    model.add_argument("--tower", type=_tower, default=m.tower, metavar="W,W,...", help=tower_help)
    model.add_argument("--gmf-dim", type=int, default=m.gmf_dim, metavar="D", help="NeuMF only")
    model.add_argument("--l2", type=float, default=m.l2, help="L2 weight")
    model.add_argument("--dropout", type=float, default=m.dropout, help="tower dropout rate")

    train = parser.add_argument_group("training")
    train.add_argument("--optimizer", choices=("adam", "sgd"), default=t.optimizer)
    for name, help_text in _TRAIN_HELP.items():
        default = getattr(t, name)
        flag = "--" + name.replace("_", "-")
        train.add_argument(flag, type=type(default), default=default, help=help_text)
    parser.add_argument("--quiet", action="store_true", help="no progress output")


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    """The pipeline configuration the flags describe (ValueError when invalid)."""
    if not is_model_name(args.model):
        raise ValueError(
            f"model name {args.model!r} must match {MODEL_NAME_PATTERN.pattern} ({MODEL_NAME_RULE})"
        )
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
    return PipelineConfig(
        data=args.data,
        model_name=args.model,
        repository=args.repository,
        data_format=args.format,
        synthetic=spec,
        model=_from_args(ModelConfig, args),
        train=_from_args(TrainConfig, args),
        quiet=args.quiet,
    )


def _from_args(cls: type[ConfigT], args: argparse.Namespace) -> ConfigT:
    """``cls`` with every field taken from the flag of the same name."""
    return cls(**{spec.name: getattr(args, spec.name) for spec in dataclasses.fields(cls)})


def run(args: argparse.Namespace) -> int:
    """Run ``recserve train`` with parsed flags; returns the exit status."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = run_pipeline(config)
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_PARITY
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(summary(result))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recserve train",
        description="Train a recommender, evaluate it, export it to ONNX and publish a version.",
    )
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))
