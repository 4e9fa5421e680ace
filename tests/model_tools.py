"""Helpers for the tests of the models room: a reconciler over a temporary repository, score
checks against the NumPy reference, hand edits of a published version, held runs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from modelrepo import MANIFEST_FILE, Source
from service.metrics.families import Metrics
from service.models.reconciler import Reconciler
from service.models.registry import Registry
from service.models.served import ServedVersion
from service.settings import Settings
from tests.factories import reference_scores

Params = dict[str, np.ndarray]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@contextlib.asynccontextmanager
async def serving(root: Path, **overrides: Any) -> AsyncIterator[tuple[Reconciler, Metrics]]:
    """A started reconciler over ``root`` (no polling), shut down when the block ends."""
    metrics = Metrics()
    settings = Settings(model_repository=root, **{"poll_interval_s": 0, **overrides})
    reconciler = Reconciler(settings, metrics)
    await reconciler.start()
    try:
        yield reconciler, metrics
    finally:
        await reconciler.shutdown()


def rows_of(served: ServedVersion, source: Source) -> int:
    spec = served.signature.one_from(source)
    assert spec is not None and spec.n_rows is not None
    return spec.n_rows


async def assert_serves(served: ServedVersion, params: Params, n: int = 300, seed: int = 0) -> None:
    """``n`` random rows of every table score as the NumPy reference of ``params`` does."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, rows_of(served, Source.USER), n)
    items = rng.integers(0, rows_of(served, Source.ITEM), n)
    out = await served.infer({"user": users, "item": items})
    assert out["score"].dtype == np.float32
    np.testing.assert_allclose(out["score"], reference_scores(params, users, items), atol=1e-5)


def states(registry: Registry, name: str) -> dict[str, str]:
    return {e.version: e.state for e in registry.index() if e.name == name}


def reasons(registry: Registry, name: str) -> dict[str, str]:
    return {e.version: e.reason for e in registry.index() if e.name == name}


def rewrite_manifest(
    version_dir: Path,
    *,
    unchecked: tuple[str, ...] = (),
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Rewrite metadata.json after the version's files were edited: the sha256 of every file it
    lists again (except ``unchecked``, which it stops listing), then ``edit`` on the raw JSON."""
    path = version_dir / MANIFEST_FILE
    raw = json.loads(path.read_text())
    raw["files"] = {
        name: hashlib.sha256((version_dir / name).read_bytes()).hexdigest()
        for name in raw["files"]
        if name not in unchecked and (version_dir / name).exists()
    }
    if edit is not None:
        edit(raw)
    path.write_text(json.dumps(raw))


def set_rows(raw: dict[str, Any], name: str, n_rows: int) -> None:
    """In a raw manifest: input ``name`` of the signature has ``n_rows`` rows."""
    for spec in raw["signature"]["inputs"]:
        if spec["name"] == name:
            spec["n_rows"] = n_rows


def hold_runs(served: ServedVersion) -> tuple[threading.Event, threading.Event]:
    """Make the version's runs wait for the returned ``release`` event; ``entered`` marks a run."""
    entered, release = threading.Event(), threading.Event()
    batcher = served._batcher
    original: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = batcher._runner

    def held(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        assert release.wait(10)
        return original(feeds)

    batcher._runner = held
    return entered, release


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)
