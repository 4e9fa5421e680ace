"""The refit: the published model trained on every interaction, hold-outs included.

The hold-outs choose the epoch and measure the model; once they have, the model that is published
is a fresh one (same seed, same hyper-parameters) trained on all the caller's interactions for the
chosen number of epochs, because each user's latest interactions are the ones that best predict
the next item.

Run after training, the refit would nearly double a run's time. It does not depend on which epoch
is chosen until that epoch is reached, so :class:`ConcurrentRefit` runs it in a second process
beside the training, epoch by epoch, keeping the weights of every epoch that can still be chosen
(training reports its best epoch so far after each epoch; the final choice is never earlier). Its
result is exactly :func:`training.train.train_epochs` for the chosen number of epochs.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

import numpy as np

from training.item_history import with_history
from training.models import Model, ModelConfig, SideFeature, build_model
from training.split import Split
from training.threads import limit_blas_threads
from training.train import EpochLoop, TrainConfig

_BEST = "best"  # the best epoch so far: weights of earlier epochs can go
_CHOSEN = "chosen"  # the final choice: send its weights


@dataclass(frozen=True)
class Refit:
    """The refit model and each of its epochs' mean loss."""

    model: Model
    losses: list[float]

    @property
    def epochs(self) -> int:
        return len(self.losses)


# The child is a fresh interpreter started with ``-c``, not a multiprocessing spawn: a spawn
# re-runs the caller's main script, which breaks any script that calls the pipeline without an
# ``if __name__ == "__main__"`` guard. It takes the parent's import path first, then its work.
_CHILD = """
import sys
from multiprocessing.connection import Connection
conn = Connection(int(sys.argv[1]))
sys.path[:] = conn.recv()
from training.refit import serve
serve(conn)
"""


def serve(conn: Connection) -> None:
    """The child process: train epoch by epoch until told the chosen epoch, send its weights."""
    try:
        split, model_config, config, features = conn.recv()
        with limit_blas_threads(config.threads or None):
            conn.send(_refit_until_chosen(conn, split, model_config, config, features))
    except FloatingPointError as exc:
        _tell(conn, ("diverged", str(exc)))
    except BaseException as exc:  # the parent reports it; a child must not die silently
        _tell(conn, ("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _tell(conn: Connection, message: tuple[str, str]) -> None:
    """Send a failure, unless the parent has gone (it ended the refit: nobody is listening)."""
    with contextlib.suppress(OSError):
        conn.send(message)


def _refit_until_chosen(
    conn: Connection,
    split: Split,
    model_config: ModelConfig,
    config: TrainConfig,
    features: Sequence[SideFeature],
) -> tuple[str, Any]:
    loop = EpochLoop(split, model_config, config, features)
    floor, chosen = 1, None
    kept: dict[int, dict[str, np.ndarray]] = {}
    losses: list[float] = []
    epoch = 0
    while chosen is None or epoch < chosen:
        if epoch < config.epochs:
            epoch += 1
            losses.append(loop.run_epoch(epoch, quiet=True, stream=sys.stderr)[0])
            kept[epoch] = loop.snapshot()
        else:
            conn.poll(None)  # every epoch that can be chosen is done: wait for the choice
        while conn.poll():
            kind, value = conn.recv()
            floor, chosen = (value, chosen) if kind == _BEST else (value, value)
        kept = {e: params for e, params in kept.items() if e >= floor}
    return ("params", (kept[chosen], losses[:chosen]))


class ConcurrentRefit:
    """A refit on ``split`` (hold-outs included) in a child process, beside the training.

    Use as a context manager: leaving it without :meth:`result` (training failed) ends the child.
    """

    def __init__(
        self,
        split: Split,
        model_config: ModelConfig,
        config: TrainConfig,
        features: Sequence[SideFeature] = (),
    ) -> None:
        self._shape = (split.n_users + 1, split.n_items + 1)
        self._model_config, self._config = model_config, config
        self._model_features = with_history(features, split, model_config.history_items)
        self._features = tuple(features)  # the child trains on the same side features
        ours, theirs = socket.socketpair()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno())], pass_fds=[theirs.fileno()]
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send(list(sys.path))
        self._conn.send((split, model_config, config, self._features))

    def best_so_far(self, epoch: int) -> None:
        """Training's best epoch so far; the chosen one will not be earlier."""
        self._conn.send((_BEST, epoch))

    def result(self, chosen: int) -> Refit:
        """The refit model after ``chosen`` epochs; raises FloatingPointError if it diverged."""
        self._conn.send((_CHOSEN, chosen))
        try:
            kind, value = self._conn.recv()
        except (EOFError, OSError):
            raise RuntimeError("the refit process ended without a result") from None
        finally:
            self.close(grace=10.0)
        if kind == "diverged":
            raise FloatingPointError(f"refit on all interactions: {value}")
        if kind != "params":
            raise RuntimeError(f"refit on all interactions failed: {value}")
        params, losses = value
        model = build_model(
            self._model_config, *self._shape, self._config.seed, self._model_features
        )
        for name, array in params.items():
            model.params[name][...] = array
        return Refit(model, list(losses))

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def close(self, grace: float = 0.0) -> None:
        """Release the connection and end the child, after ``grace`` seconds to exit by itself."""
        self._conn.close()
        try:
            self._process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._process.terminate()
            self._process.wait()

    def __enter__(self) -> ConcurrentRefit:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self._conn.closed:
            self.close()
