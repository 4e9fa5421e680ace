"""A plain-text progress bar for training epochs, written to stderr only on a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO

BAR_WIDTH = 24
REFRESH_S = 0.2


class ProgressBar:
    """One line per epoch, redrawn in place: done/total, loss and samples per second."""

    def __init__(
        self, total: int, label: str, *, stream: TextIO | None = None, enabled: bool = True
    ):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.total = max(1, total)
        self.label = label
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def update(self, done: int, loss: float) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last_draw < REFRESH_S and done < self.total:
            return
        self._last_draw = now
        self.stream.write("\r" + self.render(done, loss, now - self.start))
        self.stream.flush()

    def render(self, done: int, loss: float, elapsed: float) -> str:
        fraction = min(1.0, done / self.total)
        filled = int(fraction * BAR_WIDTH)
        rate = done / elapsed if elapsed > 0 else 0.0
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        return f"{self.label} [{bar}] {fraction * 100:3.0f}% loss {loss:.4f} {rate:,.0f} samples/s"

    def close(self) -> None:
        """Clear the bar so the next line starts clean."""
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
