"""The training-curve plot: loss and validation HR@10 / NDCG@10 per epoch (matplotlib, Agg)."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import TextIO

from training.train import EpochRecord

_warned = False


def _warn_once(stream: TextIO, message: str) -> None:
    global _warned
    if not _warned:
        stream.write(f"warning: {message}\n")
        _warned = True


def plot_history(
    history: Sequence[EpochRecord],
    *,
    baseline: tuple[float, float] | None = None,
    stream: TextIO | None = None,
) -> bytes | None:
    """The curve as PNG bytes; None, with a warning (once), when matplotlib is missing.

    ``baseline`` is the popularity baseline's validation (HR@10, NDCG@10), drawn as dashed lines.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        _warn_once(stream or sys.stderr, "matplotlib is not installed; skipping the training curve")
        return None

    epochs = [record.epoch for record in history]
    figure, (loss_axes, rank_axes) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    try:
        loss_axes.plot(epochs, [record.loss for record in history], marker="o")
        loss_axes.set_title("training loss (BCE)")
        loss_axes.set_xlabel("epoch")
        rank_axes.plot(epochs, [r.val_hr for r in history], marker="o", label="HR@10")
        rank_axes.plot(epochs, [r.val_ndcg for r in history], marker="o", label="NDCG@10")
        if baseline is not None:
            rank_axes.axhline(baseline[0], color="C0", linestyle="--", label="popularity HR@10")
            rank_axes.axhline(baseline[1], color="C1", linestyle="--", label="popularity NDCG@10")
        rank_axes.set_title("validation")
        rank_axes.set_xlabel("epoch")
        rank_axes.legend(loc="best", fontsize="small")
        for axes in (loss_axes, rank_axes):
            axes.grid(alpha=0.3)
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        figure.tight_layout()
        png = io.BytesIO()
        figure.savefig(png, format="png")
    finally:
        plt.close(figure)
    return png.getvalue()
