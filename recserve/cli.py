"""The ``recserve`` command: serve, train, and list models.

``serve`` runs the server, ``train`` trains and publishes a model, ``models`` lists what a model
repository or a running server holds, ``evaluate`` scores published versions on a dataset.

This module stands above serving and training, which stand side by side: ``serve`` takes its
flags from :mod:`service.cli`, ``train`` from :mod:`training.cli`, imported only when asked for,
so that a server process never imports the training code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from recserve import models_cli
from service import cli as service_cli

_SERVE_HELP = "Serve the model repository over HTTP (KServe V2 protocol)."
_TRAIN_HELP = "Train a recommender, export it to ONNX and publish it as a new version."
_MODELS_HELP = "List the models and versions of a repository or a server, with their metrics."
_EVALUATE_HELP = "Evaluate published versions on a dataset with the protocol of training."


def installed_version() -> str:
    """The version of the installed ``recserve`` distribution."""
    try:
        return metadata.version("recserve")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recserve", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"recserve {installed_version()}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{serve,train,models,import,evaluate}"
    )
    serve = commands.add_parser("serve", help=_SERVE_HELP, description=_SERVE_HELP)
    service_cli.add_serve_arguments(serve)
    if argv[:1] == ["train"]:
        from training import cli as training_cli

        train = commands.add_parser("train", help=_TRAIN_HELP, description=_TRAIN_HELP)
        training_cli.add_arguments(train)
    else:
        commands.add_parser("train", help=_TRAIN_HELP, add_help=False)
    models = commands.add_parser("models", help=_MODELS_HELP, description=_MODELS_HELP)
    models_cli.add_arguments(models)
    import_help = "Publish an ONNX model trained elsewhere as the next version of a model."
    if argv[:1] == ["import"]:
        from training import import_cli

        imported = commands.add_parser("import", help=import_help, description=import_help)
        import_cli.add_arguments(imported)
    else:
        commands.add_parser("import", help=import_help, add_help=False)
    if argv[:1] == ["evaluate"]:
        from training import evaluate_cli

        evaluate = commands.add_parser("evaluate", help=_EVALUATE_HELP, description=_EVALUATE_HELP)
        evaluate_cli.add_arguments(evaluate)
    else:
        commands.add_parser("evaluate", help=_EVALUATE_HELP, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command == "train":
        from training import cli as training_cli

        return training_cli.run(args)
    if args.command == "models":
        return models_cli.run(args)
    if args.command == "import":
        from training import import_cli

        return import_cli.run(args)
    if args.command == "evaluate":
        from training import evaluate_cli

        return evaluate_cli.run(args)
    return service_cli.run(parser, args)
