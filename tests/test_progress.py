"""The per-epoch progress bar: drawn on a terminal only."""

from __future__ import annotations

import io

from training.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_shows_progress_loss_and_rate_on_a_terminal() -> None:
    stream = Terminal()
    bar = ProgressBar(1000, "epoch 1/3", stream=stream)
    bar.update(1000, 0.6931)
    bar.close()
    text = stream.getvalue()
    assert text.startswith("\repoch 1/3 [" + "#" * 24 + "] 100% loss 0.6931 ")
    assert "samples/s" in text
    assert text.endswith("\r\x1b[2K")


def test_render_reports_the_fraction_and_rate() -> None:
    bar = ProgressBar(200, "epoch 2/5", stream=Terminal())
    line = bar.render(50, 0.5, elapsed=0.5)
    assert line == "epoch 2/5 [######..................]  25% loss 0.5000 100 samples/s"


def test_quiet_off_a_terminal_or_when_disabled() -> None:
    plain = io.StringIO()
    bar = ProgressBar(10, "epoch 1/1", stream=plain)
    bar.update(10, 0.1)
    bar.close()
    assert plain.getvalue() == ""
    terminal = Terminal()
    bar = ProgressBar(10, "epoch 1/1", stream=terminal, enabled=False)
    bar.update(10, 0.1)
    bar.close()
    assert terminal.getvalue() == ""
