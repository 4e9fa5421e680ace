"""The graph a run publishes, and how far ONNX Runtime is from the NumPy model on it.

Checked on the rows the server will see: every test candidate, and the unknown-id row against
some ids of each side. A feature model (``dlrm``) is checked on all its inputs: the features its
tables hold for those rows and inputs drawn over their whole range (``export.onnx_parity``).
"""

from __future__ import annotations

import numpy as np

from modelrepo import UNKNOWN_ROW
from training.export import model_bytes, onnx_parity
from training.models import DLRM, Model
from training.split import Split


def graph_and_parity(model: Model, kind: str, split: Split) -> tuple[bytes, float]:
    """The serialised ONNX graph of ``model`` and its largest |ONNX - NumPy| score gap."""
    signature = model.signature
    graph = model_bytes(model.params, kind, signature)
    users, items = parity_rows(split)
    side = model if isinstance(model, DLRM) else None
    return graph, onnx_parity(graph, model.predict, users, items, signature, side)


def parity_rows(split: Split) -> tuple[np.ndarray, np.ndarray]:
    """Embedding rows of every test candidate, plus the unknown-id row against some of each."""
    users, items = split.test.pairs()
    users, items = users + 1, items + 1
    extra_items = np.arange(min(split.n_items + 1, 100), dtype=np.int64)
    extra_users = np.arange(min(split.n_users + 1, 100), dtype=np.int64)
    unknown_users = np.full_like(extra_items, UNKNOWN_ROW)
    unknown_items = np.full_like(extra_users, UNKNOWN_ROW)
    users = np.concatenate([users, unknown_users, extra_users])
    items = np.concatenate([items, extra_items, unknown_items])
    return users, items
