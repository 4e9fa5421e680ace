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
    """

    kind: str = "mlp"
    embedding_dim: int = 32
    tower: tuple[int, ...] = (64, 32, 16)
    gmf_dim: int = 16
    l2: float = 0.0
    dropout: float = 0.0

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
