"""The side-feature and cold-start flags of ``recserve train``.

Side features feed a feature model: files given with any other ``--kind`` are refused (exit 2,
naming the flag) rather than silently ignored, so ``--kind dlrm`` is always written out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from training.exits import positive_int
from training.feature_inputs import FeatureOptions
from training.features import FeatureKind

FEATURE_KIND = "dlrm"
"""The model kind that reads side features."""


def _kind_override(text: str) -> tuple[str, FeatureKind]:
    name, sep, kind = text.partition("=")
    kinds = ", ".join(FeatureKind)
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=KIND (KIND one of {kinds}), got {text!r}")
    try:
        return name.strip(), FeatureKind(kind.strip().replace("-", "_"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"kind {kind!r} is not one of {kinds}") from None


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a share of users in [0, 1), got {text!r}")
    return value


def add_feature_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``side features`` and ``cold start`` flags to ``parser``."""
    group = parser.add_argument_group(
        "side features",
        f"per-user and per-item features for --kind {FEATURE_KIND} (CSV with the id first, "
        "MovieLens u.user / u.item, or typed TSV with name:token / token_seq / float headers)",
    )
    group.add_argument("--user-features", type=Path, metavar="PATH", help="user feature file")
    group.add_argument("--item-features", type=Path, metavar="PATH", help="item feature file")
    group.add_argument(
        "--feature-kind",
        type=_kind_override,
        action="append",
        default=[],
        metavar="NAME=KIND",
        help="read column NAME as KIND (categorical, multi_hot, numeric) instead of the "
        "detected kind; repeatable",
    )
    group.add_argument(
        "--drop-feature",
        action="append",
        default=[],
        metavar="NAME",
        help="leave column NAME out; repeatable",
    )
    group.add_argument(
        "--max-bag",
        type=positive_int,
        default=None,
        metavar="N",
        help="most categories kept per multi-hot bag (default: the longest bag)",
    )
    group.add_argument(
        "--history-items",
        type=int,
        default=0,
        metavar="K",
        help="add each user's K latest items as a feature (a bag over the item ids: the K "
        "before each training interaction, the K latest in the published table; a caller may "
        "send their own as user_features.recent_items); default 0: none",
    )
    group.add_argument(
        "--cold-start-users",
        type=_fraction,
        default=0.0,
        metavar="FRACTION",
        help="hold this share of users out of training entirely and report HR@10 / NDCG@10 on "
        "them, served from their side features only, beside popularity's (default 0: none)",
    )


def feature_options(args: argparse.Namespace) -> FeatureOptions | None:
    """The side-feature options the flags describe, None without feature files; ValueError
    naming the flag when they do not fit the other flags."""
    if args.history_items and args.kind != FEATURE_KIND:
        raise ValueError(
            f"--history-items needs --kind {FEATURE_KIND} (the kind that reads side features), "
            f"got --kind {args.kind}"
        )
    if args.user_features is None and args.item_features is None:
        given: dict[str, object] = {
            "--feature-kind": args.feature_kind,
            "--drop-feature": args.drop_feature,
            "--max-bag": args.max_bag,
        }
        for flag in (flag for flag, value in given.items() if value):
            raise ValueError(f"{flag} needs --user-features or --item-features")
        return None
    if args.kind != FEATURE_KIND:
        flag = "--user-features" if args.user_features is not None else "--item-features"
        raise ValueError(
            f"{flag} needs --kind {FEATURE_KIND} (the kind that reads side features), "
            f"got --kind {args.kind}"
        )
    return FeatureOptions(
        user_path=args.user_features,
        item_path=args.item_features,
        kinds=dict(args.feature_kind),
        drop=tuple(args.drop_feature),
        max_bag=args.max_bag,
    )
