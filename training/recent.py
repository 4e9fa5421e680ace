"""The published mf model's user vectors lean towards each user's latest items.

An ``mf`` user vector ``p_u`` is fitted to the user's whole history, old and new alike, while what
a user does next is best predicted by what they did last. So, once training is done, each user's
row of the user table is replaced by

    p_u <- a * p_u + (1 - a) * m_u * |p_u| / |m_u|

where ``m_u`` is the mean of the item vectors ``q_j`` of the user's latest ``K`` items (time
order), item ``j`` of age ``t`` (0: the latest) weighing ``decay ** t``. ``m_u`` lives in the space
of the items (the score is ``w_out . (p_u * q_i)`` plus biases), and its rescaling to ``|p_u|``
keeps the user's vector as long as it was. Only the user table changes: the ONNX graph, the item
table and the biases are those training produced. The unknown row 0 and users without history
are left alone.

The other kinds get no blend: their user embeddings feed an MLP (or a GMF branch beside one), so
they do not live in the space of the item embeddings and a mean of item vectors means nothing
there.

``(a, K, decay)`` is chosen on the validation hold-outs (the evaluated model, histories from the
training split), best validation NDCG@10 first and "off" kept unless something beats it; the test
figures describe the evaluated model with the chosen blend, and the published model gets it with
the histories it was trained on (refit: all interactions, hold-outs being the latest).
"""

from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.evaluate import Metrics, evaluate
from training.item_history import LatestItems
from training.models import Model
from training.split import Split
from training.train import scorer

KINDS = frozenset({"mf"})  # kinds whose user vectors share the item vectors' space
SHARES = (1.0, 0.8, 0.6, 0.4)  # a: the share of the user's own vector (1.0: off)
ITEMS = (3, 5, 10)  # K
DECAYS = (1.0, 0.8, 0.6)
_TINY = 1e-12


@dataclass(frozen=True)
class Blend:
    """One setting: ``share`` of the user's own vector, ``items`` latest items, their ``decay``."""

    share: float
    items: int
    decay: float

    @property
    def off(self) -> bool:
        return self.items == 0 or self.share >= 1.0

    def as_dict(self) -> dict[str, float | int]:
        return {"share": self.share, "items": self.items, "decay": self.decay}


OFF = Blend(1.0, 0, 1.0)


@dataclass(frozen=True)
class RecentOptions:
    """What ``recserve train`` is told: each of ``items``, ``share``, ``decay`` fixed, or None
    for chosen on validation from the grid; ``enabled`` False (``--no-recent``) switches off."""

    enabled: bool = True
    items: int | None = None
    share: float | None = None
    decay: float | None = None

    def __post_init__(self) -> None:
        if self.items is not None and self.items < 0:
            raise ValueError(f"--recent-items must be at least 0, got {self.items}")
        if self.share is not None and not 0.0 <= self.share <= 1.0:
            raise ValueError(f"--recent-blend must be in [0, 1], got {self.share}")
        if self.decay is not None and not (math.isfinite(self.decay) and 0 < self.decay <= 1):
            raise ValueError(f"--recent-decay must be in (0, 1], got {self.decay}")

    @property
    def fixed(self) -> bool:
        """Every value given: the blend is applied as told, not chosen."""
        return None not in (self.items, self.share, self.decay)

    @property
    def switched_off(self) -> bool:
        return not self.enabled or self.items == 0 or self.share == 1.0

    def grid(self) -> list[Blend]:
        """The settings to try, "off" first where the grid has it, each once."""
        shares = SHARES if self.share is None else (self.share,)
        items = ITEMS if self.items is None else (self.items,)
        decays = DECAYS if self.decay is None else (self.decay,)
        blends = [Blend(*values) for values in itertools.product(shares, items, decays)]
        on = [blend for blend in blends if not blend.off]
        return ([OFF] if len(on) < len(blends) else []) + on


def blended_users(params: dict[str, np.ndarray], latest: LatestItems, blend: Blend) -> np.ndarray:
    """The user table with each row with history blended (module docstring); a new array."""
    users = params["user_emb"]
    if blend.off:
        return users.copy()
    rows = latest.rows[:, : blend.items]
    weights = np.where(rows >= 0, blend.decay ** np.arange(rows.shape[1], dtype=np.float64), 0.0)
    totals = weights.sum(axis=1)
    has = totals > 0
    vectors = params["item_emb"][np.maximum(rows[has], 0)].astype(np.float64)
    mean = np.einsum("uk,ukd->ud", weights[has], vectors) / totals[has, None]
    own = users[has].astype(np.float64)
    scale = np.linalg.norm(own, axis=1) / np.maximum(np.linalg.norm(mean, axis=1), _TINY)
    out = users.copy()
    out[has] = (blend.share * own + (1.0 - blend.share) * mean * scale[:, None]).astype(out.dtype)
    return out


def apply(model: Model, latest: LatestItems, blend: Blend) -> None:
    """Blend ``model``'s user table in place."""
    model.params["user_emb"][...] = blended_users(model.params, latest, blend)


def _figures(metrics: Metrics) -> dict[str, float]:
    return {f"hr@{metrics.k}": metrics.hr, f"ndcg@{metrics.k}": metrics.ndcg}


@dataclass(frozen=True)
class RecentChoice:
    """The blend a run applies (``OFF``: none) and the manifest's record of it."""

    blend: Blend
    record: dict[str, Any]

    def publish(self, model: Model, everything: Split) -> Model:
        """Apply the blend to the refit ``model`` with the histories of ``everything`` (all
        interactions, the hold-outs being each user's latest); returns ``model``."""
        if not self.blend.off:
            apply(model, LatestItems.of(everything, self.blend.items), self.blend)
            self.record["published_histories"] = "all interactions (hold-outs included)"
        return model


def choose_recent(options: RecentOptions, kind: str, model: Model, split: Split) -> RecentChoice:
    """Choose the blend on ``split``'s validation hold-outs and apply it to the evaluated
    ``model`` in place (histories: the training split), so that its test figures describe it."""
    if kind not in KINDS:
        reason = f"kind {kind}: its user embeddings do not share the item embeddings' space"
        return RecentChoice(OFF, {"applied": False, "reason": reason})
    if options.switched_off:
        return RecentChoice(OFF, {"applied": False, "reason": "switched off by the flags"})
    grid = options.grid()
    validation = split.validation if len(split.validation) else None
    if validation is None and not options.fixed:
        return RecentChoice(OFF, {"applied": False, "reason": "no validation hold-outs"})
    latest = LatestItems.of(split, max(blend.items for blend in grid))
    own = model.params["user_emb"].copy()
    off = evaluate(scorer(model), validation) if validation else None
    tried: list[tuple[Blend, Metrics | None]] = [(OFF, off)] if OFF in grid else []
    for blend in grid[len(tried) :]:
        apply(model, latest, blend)
        tried.append((blend, evaluate(scorer(model), validation) if validation else None))
        model.params["user_emb"][...] = own
    best, metrics = tried[0]
    for blend, figures in tried[1:]:
        if figures is not None and metrics is not None and figures.ndcg > metrics.ndcg:
            best, metrics = blend, figures
    apply(model, latest, best)
    histories = "training split (hold-outs excluded)"
    record: dict[str, Any] = {
        "applied": not best.off,
        **(best.as_dict() if not best.off else {"reason": "validation chose the trained vectors"}),
        "chosen_on": "flags" if options.fixed else f"validation NDCG@10 ({len(grid)} settings)",
        "validation": {
            "off": _figures(off) if off else None,
            "chosen": _figures(metrics) if metrics else None,
        },
        **({"test_histories": histories, "published_histories": histories} if not best.off else {}),
    }
    return RecentChoice(best, record)  # a refit's ``publish`` names its own histories


def recent_lines(records: dict[str, Any]) -> list[str]:
    """The run report's line on the blend."""
    record = records.get("recent_items")
    if not isinstance(record, dict):
        return []
    if not record["applied"]:
        return [f"recent items: user vectors not blended ({record['reason']})"]
    validation = record["validation"]
    figures = ""
    if validation["off"] is not None:
        off, chosen = validation["off"]["ndcg@10"], validation["chosen"]["ndcg@10"]
        figures = f": val NDCG@10 {off:.4f} -> {chosen:.4f}"
    return [
        f"recent items: user vectors {record['share']:g} own + {1 - record['share']:g} mean of "
        f"the latest {record['items']} items (decay {record['decay']:g}), chosen by "
        f"{record['chosen_on']}{figures}; published with the histories of the "
        f"{record['published_histories']}"
    ]


def add_recent_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``recent items`` flags to ``parser``."""
    group = parser.add_argument_group(
        "recent items",
        "mf only: blend each user's vector with the mean vector of their latest items, "
        "chosen on the validation hold-outs unless fixed here",
    )
    group.add_argument(
        "--recent-items",
        type=int,
        metavar="K",
        help=f"latest items per user (0: off; default: chosen from {ITEMS})",
    )
    group.add_argument(
        "--recent-blend",
        type=float,
        metavar="A",
        help=f"share of the user's own vector (1: off; default: chosen from {SHARES})",
    )
    group.add_argument(
        "--recent-decay",
        type=float,
        metavar="D",
        help=f"weight of an item per step of age (default: chosen from {DECAYS})",
    )
    group.add_argument(
        "--no-recent", dest="recent", action="store_false", help="publish user vectors as trained"
    )


def recent_options(args: argparse.Namespace) -> RecentOptions:
    """The options the flags describe; ValueError for a value out of range, or for a value
    given to a kind the blend does not apply to."""
    options = RecentOptions(args.recent, args.recent_items, args.recent_blend, args.recent_decay)
    given = (args.recent_items, args.recent_blend, args.recent_decay)
    if args.kind not in KINDS and any(value is not None for value in given):
        raise ValueError(
            f"--recent-* apply to --kind {', '.join(sorted(KINDS))} only: the user embeddings of "
            f"--kind {args.kind} do not share the item embeddings' space"
        )
    return options
