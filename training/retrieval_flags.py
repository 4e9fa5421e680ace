"""The retrieval flags of ``recserve train`` (the model is described in ``training.retrieval``).

``positive_int`` refuses a size of 0 when the flags are parsed (exit 2, naming the flag); a
``--retrieval gmf`` with a ranking model that has no GMF branch is refused before training.
"""

from __future__ import annotations

import argparse

from training.exits import positive_int
from training.retrieval import RETRIEVAL_CHOICES, RetrievalOptions

_DEFAULT = RetrievalOptions()


def add_retrieval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``retrieval`` flags to ``parser``."""
    group = parser.add_argument_group(
        "retrieval",
        "the dot-product model published beside the ranking model, for two-stage serving",
    )
    group.add_argument(
        "--retrieval",
        choices=RETRIEVAL_CHOICES,
        default=_DEFAULT.choice,
        help="auto: an mf ranking model's own vectors, else an mf model trained in the run; "
        "mf: the same; gmf: NeuMF's GMF branch; none: publish no retrieval vectors",
    )
    group.add_argument(
        "--retrieval-dim",
        type=positive_int,
        default=_DEFAULT.dim,
        metavar="D",
        help="factors of a retrieval model trained for the purpose (one bias column is added)",
    )
    group.add_argument(
        "--retrieval-epochs",
        type=positive_int,
        default=_DEFAULT.epochs,
        metavar="N",
        help="most epochs of that model (early stopping on validation picks fewer)",
    )
    group.add_argument(
        "--retrieve-n",
        type=positive_int,
        default=_DEFAULT.retrieve_n,
        metavar="N",
        help="candidates the run's two-stage figures retrieve per user",
    )


def retrieval_options(args: argparse.Namespace) -> RetrievalOptions:
    """The options the flags describe; ValueError for a choice the ranking model cannot meet."""
    options = RetrievalOptions(
        choice=args.retrieval,
        dim=args.retrieval_dim,
        epochs=args.retrieval_epochs,
        retrieve_n=args.retrieve_n,
    )
    options.source(args.kind)
    return options
