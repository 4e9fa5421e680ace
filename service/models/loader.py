"""Loading one version directory: read and check it, build its retrieval index, open a session,
fit it to its signature, warm.

Runs in a worker thread. The version is read only through :func:`modelrepo.read_version`, which
checks every file against the manifest. Every way a version can be unfit to serve raises
:class:`service.errors.ModelLoadError` with a reason meant for the repository index. A load can be
abandoned between its steps (the server is shutting down): it then raises :class:`LoadCancelled`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelrepo import StoredVersion, VersionError, read_version
from service.errors import ModelLoadError
from service.models.config import EffectiveConfig
from service.retrieval.build import BuiltIndex, IndexSettings, build_index
from service.runtime.conformance import check_graph
from service.runtime.provider import choose_provider
from service.runtime.session import Runtime
from service.runtime.warmup import warm_up

log = logging.getLogger(__name__)


class LoadCancelled(ModelLoadError):
    """The load was abandoned because the server is stopping; not a fault of the version."""


@dataclass(frozen=True)
class PreparedVersion:
    """A version that passed every check and is warmed up, not yet taking requests."""

    stored: StoredVersion
    runtime: Runtime
    load_seconds: float
    index: BuiltIndex | None = None
    """The retrieval index over the version's item vectors; None where it ships none."""


def prepare_version(
    path: Path,
    config: EffectiveConfig,
    *,
    device_id: int = 0,
    cancelled: Callable[[], bool] | None = None,
) -> PreparedVersion:
    """Read, check, load and warm up the version in ``path``.

    ``cancelled`` is asked between steps (and between warmup runs); once it answers True the load
    stops with :class:`LoadCancelled`.
    """
    stop = cancelled or _never

    def checkpoint() -> None:
        if stop():
            raise LoadCancelled("load abandoned: the server is shutting down")

    started = time.monotonic()
    checkpoint()
    try:
        stored = read_version(path)
    except VersionError as exc:
        raise ModelLoadError(str(exc)) from None
    checkpoint()
    index = None
    if stored.retrieval is not None:  # built before the version serves: ready means searchable
        retrieval = config.retrieval
        settings = IndexSettings(
            retrieval.ann_above_items, retrieval.ann_lists, retrieval.ann_probes
        )
        index = build_index(stored.retrieval, settings, str(path))
        checkpoint()
    provider = choose_provider(config.provider, device_id).provider
    runtime = Runtime(
        stored.model,
        provider=provider,
        device_id=device_id,
        intra_op_threads=config.intra_op_threads,
    )
    if runtime.provider != provider:
        if config.provider == "cuda":
            raise ModelLoadError(
                f"provider 'cuda' configured but the session runs on {runtime.provider}"
            )
        log.warning("session asked for %s but runs on %s", provider, runtime.provider)
    signature = stored.manifest.signature
    check_graph(signature, runtime.inputs, runtime.outputs)
    warm_up(
        runtime,
        signature,
        config.warmup_batch_sizes,
        between=checkpoint,
        largest=config.batching.max_batch_rows if config.warmup_batch_sizes else 0,
    )
    return PreparedVersion(stored, runtime, time.monotonic() - started, index)


def _never() -> bool:
    return False
