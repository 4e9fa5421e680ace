"""The training curve says what it shows: model, version, data set, axes and the chosen epoch."""

from __future__ import annotations

import math

import pytest

from training.plot import (
    EPOCH_LABEL,
    LOSS_LABEL,
    RANK_LABEL,
    CurveLabels,
    build_figure,
    chosen_label,
    plot_history,
)
from training.train import EpochRecord

pytest.importorskip("matplotlib")

LABELS = CurveLabels("movies", 7, "ml-100k/u.data")


def history(epochs: int) -> list[EpochRecord]:
    return [
        EpochRecord(e, 1.0 / e, 0.1 * e, 0.05 * e, samples=100, seconds=0.1, samples_per_s=1e3)
        for e in range(1, epochs + 1)
    ]


def test_title_names_the_model_the_version_and_the_data_set() -> None:
    assert LABELS.title == "movies version 7 · trained on ml-100k/u.data"


def test_figure_labels_its_axes_and_marks_the_chosen_epoch() -> None:
    figure = build_figure(history(5), chosen=3, labels=LABELS, baseline=(0.2, 0.1))
    assert figure.get_suptitle() == LABELS.title
    loss_axes, rank_axes = figure.get_axes()
    assert (loss_axes.get_xlabel(), loss_axes.get_ylabel()) == (EPOCH_LABEL, LOSS_LABEL)
    assert (rank_axes.get_xlabel(), rank_axes.get_ylabel()) == (EPOCH_LABEL, RANK_LABEL)
    for axes in (loss_axes, rank_axes):
        marks = [line for line in axes.get_lines() if line.get_label() == chosen_label(3)]
        assert len(marks) == 1, axes.get_title()
        xs = list(marks[0].get_xdata())
        assert xs == [3, 3]  # a vertical line at the chosen epoch
        legend = axes.get_legend()
        assert legend is not None
        assert chosen_label(3) in [text.get_text() for text in legend.get_texts()]
    assert chosen_label(3) == "chosen epoch 3"
    curves = {line.get_label(): line for line in rank_axes.get_lines()}
    assert list(curves["NDCG@10"].get_ydata()) == [0.05 * e for e in range(1, 6)]
    assert {"popularity HR@10", "popularity NDCG@10"} <= set(curves)


def test_a_run_without_validation_still_plots_its_loss() -> None:
    records = [EpochRecord(e, 1.0 / e, math.nan, math.nan, 100, 0.1, 1e3) for e in range(1, 3)]
    png = plot_history(records, chosen=2, labels=LABELS)
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"
