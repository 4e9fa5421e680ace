"""The training-curve plot: loss and validation HR@10 / NDCG@10 per epoch (matplotlib, Agg).

The figure says what it shows without the files beside it: its title names the model, the version
and the data set, its axes are labelled, and a vertical line marks the epoch that was chosen (the
one whose weights were kept, or for which the published model was refit).
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from training.train import EpochRecord

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_warned = False

LOSS_LABEL = "mean training loss (BCE)"
RANK_LABEL = "validation metric (leave-one-out)"
EPOCH_LABEL = "epoch"


@dataclass(frozen=True)
class CurveLabels:
    """What the figure is of: the model, its version and the data set."""

    model_name: str
    version: int
    dataset: str

    @property
    def title(self) -> str:
        return f"{self.model_name} version {self.version} · trained on {self.dataset}"


def chosen_label(epoch: int) -> str:
    return f"chosen epoch {epoch}"


def _warn_once(stream: TextIO, message: str) -> None:
    global _warned
    if not _warned:
        stream.write(f"warning: {message}\n")
        _warned = True


def build_figure(
    history: Sequence[EpochRecord],
    *,
    chosen: int,
    labels: CurveLabels,
    baseline: tuple[float, float] | None = None,
) -> Figure:
    """The curve as a matplotlib figure, outside pyplot's global state (nothing to close).

    ``baseline`` is the popularity baseline's validation (HR@10, NDCG@10), drawn as dashed lines.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [record.epoch for record in history]
    figure = Figure(figsize=(10, 4.4), dpi=100)
    loss_axes, rank_axes = figure.subplots(1, 2)
    loss_axes.plot(epochs, [record.loss for record in history], marker="o")
    loss_axes.set_title("training loss")
    loss_axes.set_ylabel(LOSS_LABEL)
    rank_axes.plot(epochs, [r.val_hr for r in history], marker="o", label="HR@10")
    rank_axes.plot(epochs, [r.val_ndcg for r in history], marker="o", label="NDCG@10")
    if baseline is not None:
        rank_axes.axhline(baseline[0], color="C0", linestyle="--", label="popularity HR@10")
        rank_axes.axhline(baseline[1], color="C1", linestyle="--", label="popularity NDCG@10")
    rank_axes.set_title("validation")
    rank_axes.set_ylabel(RANK_LABEL)
    for axes in (loss_axes, rank_axes):
        axes.axvline(chosen, color="C3", linestyle=":", label=chosen_label(chosen))
        axes.set_xlabel(EPOCH_LABEL)
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.legend(loc="best", fontsize="small")
    figure.suptitle(labels.title)
    figure.tight_layout()
    return figure


def plot_history(
    history: Sequence[EpochRecord],
    *,
    chosen: int,
    labels: CurveLabels,
    baseline: tuple[float, float] | None = None,
    stream: TextIO | None = None,
) -> bytes | None:
    """The curve as PNG bytes; None, with a warning (once), when matplotlib is missing."""
    try:
        figure = build_figure(history, chosen=chosen, labels=labels, baseline=baseline)
    except ImportError:
        _warn_once(stream or sys.stderr, "matplotlib is not installed; skipping the training curve")
        return None
    png = io.BytesIO()
    figure.savefig(png, format="png")
    return png.getvalue()
