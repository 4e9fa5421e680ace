"""What a side-feature column is, and the error a feature file that cannot be read raises.

Shared by the format parsers (:mod:`training.features.formats`), the column builder
(:mod:`training.features.files`) and the encoder (:mod:`training.features.encode`), so that each
speaks of lines the same way: reports name the first few line numbers, never thousands.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

MAX_LISTED = 5
"""Line numbers (or values) a note or an error lists before it says "..."."""


class FeatureKind(StrEnum):
    """How a column feeds a model: its own vocabulary (``categorical``), a bag of categories of one
    vocabulary (``multi_hot``), or a standardised number (``numeric``)."""

    CATEGORICAL = "categorical"
    MULTI_HOT = "multi_hot"
    NUMERIC = "numeric"


class FeatureFileError(ValueError):
    """A feature file cannot be read as features; the message names the file and the line(s)."""


def listed(items: Sequence[object], limit: int = MAX_LISTED) -> str:
    """``items`` as ``"3, 9, 12"``, ending with ``", ..."`` when there are more than ``limit``."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (", ..." if len(items) > limit else "")


def lines_text(lines: Sequence[int], limit: int = MAX_LISTED) -> str:
    """``"line 7"`` or ``"lines 3, 9, 12, ..."``."""
    return f"line {lines[0]}" if len(lines) == 1 else f"lines {listed(lines, limit)}"
