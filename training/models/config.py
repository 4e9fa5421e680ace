"""The configuration of a model: its kind (a name in the registry), architecture, regularisation."""

from __future__ import annotations

from dataclasses import dataclass

from training.models.registry import registered


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and regularisation of a model.

    ``kind`` names a registered model kind (``training.models.registry``). ``l2`` adds ``l2 / 2``
    times the squared norm of every weight matrix and of each distinct embedding row the batch
    looks up (biases excluded) to the loss, so that an embedding update touches only the
    looked-up rows. ``dropout`` is the rate applied after each ReLU of the MLP tower in training
    (NeuMF's GMF branch has none).

    The defaults are what scored best on MovieLens 100K in ``bench/quality_sweep.py`` while still
    learning on the ML-1M-sized synthetic set: the ``mf`` kind (a biased dot product), 64 factors,
    ``l2`` 1e-5 (1e-4 scored a little higher on MovieLens 100K but collapses to popularity on the
    larger set), with ``TrainConfig``'s defaults.
    ``tower``, ``gmf_dim`` and ``dropout`` serve the MLP kinds.

    ``dlrm`` only: ``bottom`` holds the widths of the hidden ReLU layers of the bottom MLP over the
    numeric side features (a last ReLU layer to ``embedding_dim`` follows; empty: that layer
    alone); ``id_dropout`` is the rate at which training replaces a sample's user id by the
    unknown row while keeping that user's features, so that the model learns to score a user it
    never saw from their features (cold start). ``history_items`` K > 0 adds the user's latest K
    items as a bag (``training.item_history``).
    """

    kind: str = "mf"
    embedding_dim: int = 64
    tower: tuple[int, ...] = (64, 32, 16)
    gmf_dim: int = 16
    l2: float = 1e-5
    dropout: float = 0.0
    bottom: tuple[int, ...] = (32,)
    id_dropout: float = 0.3
    history_items: int = 0

    def __post_init__(self) -> None:
        registered(self.kind)  # raises ValueError naming the registered kinds
        if self.embedding_dim < 1 or self.gmf_dim < 1:
            raise ValueError("embedding sizes must be positive")
        if not self.tower or any(width < 1 for width in self.tower):
            raise ValueError(f"tower needs at least one positive layer width, got {self.tower}")
        if self.l2 < 0:
            raise ValueError(f"l2 must be non-negative, got {self.l2}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if any(width < 1 for width in self.bottom):
            raise ValueError(f"bottom needs positive layer widths, got {self.bottom}")
        if not 0.0 <= self.id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if self.history_items < 0:
            raise ValueError(f"history_items must be >= 0, got {self.history_items}")
