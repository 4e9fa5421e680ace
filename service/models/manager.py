"""The registry of served model versions: loading, hot reload, lookup, validation before queueing.

A poll (every ``poll_interval_s``) scans the repository and reconciles each model with its
version policy. A new or changed version is loaded and warmed in a thread before it replaces
anything; the version it replaces stops being handed out at once, finishes the requests already
queued for it, then releases its session. A version that fails to load leaves what was serving
untouched; its reason shows in :meth:`ModelManager.index` and it is retried only when its files
change. On shutdown a load in progress is abandoned at its next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from service.batching.batcher import Batcher
from service.errors import (
    InvalidInput,
    ModelLoadError,
    ModelNotFound,
    ModelNotReady,
    ShuttingDown,
)
from service.metrics.families import Metrics
from service.metrics.stats import VersionStats
from service.models.config import CONFIG_FILE, EffectiveConfig, load_model_config, resolve
from service.models.loader import LoadCancelled, PreparedVersion, prepare_version
from service.models.repository import FileStamp, ModelDir, scan, stamp_file, stamp_version
from service.models.vocab import Vocabulary
from service.runtime.session import KSERVE_TO_NUMPY, TensorSpec, choose_provider, live_sessions
from service.settings import Settings

__all__ = [
    "IndexEntry",
    "LoadedVersion",
    "ModelManager",
    "TensorSpec",
    "VersionStats",
]

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"
LOADING = "LOADING"
UNLOADING = "UNLOADING"


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str  # READY | UNAVAILABLE | LOADING | UNLOADING
    reason: str


class LoadedVersion:
    """One served model version: its specs, vocabularies, config, statistics and batcher."""

    def __init__(
        self,
        name: str,
        version: int,
        prepared: PreparedVersion,
        config: EffectiveConfig,
        stamp: tuple[FileStamp, ...],
        metrics: Metrics,
    ) -> None:
        self.name = name
        self.version = version
        self.path = prepared.path
        self.inputs = prepared.inputs
        self.outputs = prepared.outputs
        self.metadata: Mapping[str, Any] = prepared.metadata
        self.users: Vocabulary = prepared.users
        self.items: Vocabulary = prepared.items
        self.config = config
        self.provider = prepared.runtime.provider
        self.stamp = stamp
        self.stats = VersionStats(name, str(version))
        self.replaced_by: LoadedVersion | None = None  # set when reloaded in place
        self._runtime = prepared.runtime
        self._metrics = metrics
        self._batcher = Batcher(
            prepared.runtime.run,
            config.batching,
            model=name,
            version=str(version),
            metrics=metrics,
            stats=self.stats,
        )
        self._limits = {"user": self.users.n_rows, "item": self.items.n_rows}
        self._empty = {
            spec.name: np.empty(0, dtype=KSERVE_TO_NUMPY.get(spec.datatype, np.float32))
            for spec in self.outputs
        }

    @property
    def queued_rows(self) -> int:
        return self._batcher.queued_rows

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``user`` and ``item`` rows, then queue them; returns ``{"score": ...}``."""
        feeds, n = self._validate(inputs)
        if n == 0:
            return dict(self._empty)
        if self._batcher.closing and self.replaced_by is not None:
            return await self.replaced_by.infer(feeds)
        return await self._batcher.submit(feeds)

    def _validate(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        limits = self._limits
        if len(inputs) != len(limits) or any(name not in limits for name in inputs):
            missing = [name for name in limits if name not in inputs]
            unexpected = [name for name in inputs if name not in limits]
            raise InvalidInput(
                f"model '{self.name}' takes inputs {sorted(limits)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {unexpected}" if unexpected else "")
            )
        feeds: dict[str, np.ndarray] = {}
        n = -1
        for name, limit in limits.items():
            value = inputs[name]
            if value.dtype != np.int64:
                if value.dtype.kind not in "iu":
                    raise InvalidInput(
                        f"input '{name}' has datatype {value.dtype.name}; expected INT64"
                    )
                value = value.astype(np.int64)
            if value.ndim != 1:
                if value.ndim == 2 and value.shape[1] == 1:
                    value = value.reshape(-1)
                else:
                    raise InvalidInput(
                        f"input '{name}' has shape {list(value.shape)}; expected [-1]"
                    )
            if n < 0:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise InvalidInput(
                    f"inputs must have the same number of rows; '{name}' has {value.shape[0]}, "
                    f"expected {n}"
                )
            if n and (value.min() < 0 or value.max() >= limit):
                at = int(np.flatnonzero((value < 0) | (value >= limit))[0])
                raise InvalidInput(
                    f"input '{name}' value {int(value[at])} at index {at} is out of range "
                    f"[0, {limit}) for model '{self.name}' version {self.version}"
                )
            feeds[name] = value
        return feeds, n

    def user_rows(self, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of raw user ids and the unknown ones (served from row 0; counted in a metric)."""
        return self._rows(self.users, ids, "user")

    def item_rows(self, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of raw item ids and the unknown ones (served from row 0; counted in a metric)."""
        return self._rows(self.items, ids, "item")

    def _rows(
        self, vocab: Vocabulary, ids: Sequence[str], kind: str
    ) -> tuple[np.ndarray, list[str]]:
        rows, unknown = vocab.rows(ids)
        if unknown:
            self._metrics.unknown_ids.labels(self.name, str(self.version), kind).inc(len(unknown))
        return rows, unknown

    async def close(self, grace_s: float) -> None:
        """Finish queued requests (within ``grace_s``), then release the session."""
        await self._batcher.drain(grace_s)
        self._runtime.close()

    def abort(self) -> None:
        """Refuse new requests and answer every queued or computing one 503 at once."""
        self._batcher.abort()


@dataclass
class _Model:
    """What the manager knows of one model directory."""

    name: str
    path: Path
    present: tuple[int, ...] = ()
    config_stamp: FileStamp | str = "unread"
    config: EffectiveConfig | None = None
    config_error: str = ""
    served: dict[int, LoadedVersion] = field(default_factory=dict)
    latest: LoadedVersion | None = None
    failed: dict[int, tuple[tuple[FileStamp, ...], str]] = field(default_factory=dict)
    loading: set[int] = field(default_factory=set)
    unloading: set[int] = field(default_factory=set)
    unloaded: bool = False  # explicitly; polling leaves it unloaded until an explicit load

    def serve(self, versions: Mapping[int, LoadedVersion]) -> None:
        self.served = dict(sorted(versions.items()))
        self.latest = self.served[max(self.served)] if self.served else None


class ModelManager:
    """Loads the repository, keeps it in sync, and hands out served versions."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._root = settings.model_repository
        self._models: dict[str, _Model] = {}
        self._lock = asyncio.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._cancel_loads = threading.Event()
        self._retiring: dict[asyncio.Task[None], LoadedVersion] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = False
        self._repository_unreadable = False
        self.provider = ""

    @property
    def ready(self) -> bool:
        return self._started and not self._stopping

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Choose the provider, load the repository, start polling."""
        choice = choose_provider(self._settings.provider, self._settings.cuda_device_id)
        self.provider = choice.provider
        log.info("execution provider: %s (%s)", choice.provider, choice.reason)
        await self.rescan()
        self._started = True
        if self._settings.poll_interval_s > 0:
            self._poll_task = asyncio.create_task(self._poll(), name="repository-poll")

    def stop_loading(self) -> None:
        """Abandon the load in progress and any later one (safe from any thread or a signal)."""
        self._cancel_loads.set()

    def abort(self) -> None:
        """Answer 503 now to every request queued or computing, in every version (grace is over)."""
        versions = [v for m in self._models.values() for v in m.served.values()]
        for loaded in [*versions, *self._retiring.values()]:
            loaded.abort()

    async def shutdown(self) -> None:
        """Stop polling, drain every version within ``shutdown_grace_s``, release sessions."""
        self._stopping = True
        self._cancel_loads.set()
        for model in self._models.values():
            for version in sorted(model.loading):
                log.info("abandoning the load of model '%s' version %d", model.name, version)
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        async with self._lock:
            for model in self._models.values():
                for loaded in model.served.values():
                    self._retire(model, loaded)
                model.serve({})
        await self.wait_unloaded()
        self._loader.shutdown(wait=False, cancel_futures=True)

    async def wait_unloaded(self) -> None:
        """Wait until every version being unloaded has finished its requests and been released."""
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._settings.poll_interval_s)
            try:
                await self.rescan()
            except Exception:
                log.exception("repository poll failed")

    # -- lookup ----------------------------------------------------------------------------------

    def get(self, name: str, version: int | None = None) -> LoadedVersion:
        """The served version (None: the highest served one)."""
        if self._stopping:
            raise ShuttingDown("the server is shutting down; send the request elsewhere")
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model '{name}'")
        if version is None:
            if model.latest is None:
                raise ModelNotReady(f"model '{name}' has no version ready{_why(model, None)}")
            return model.latest
        loaded = model.served.get(version)
        if loaded is not None:
            return loaded
        if version in model.present or version in model.unloading:
            raise ModelNotReady(
                f"model '{name}' version {version} is not ready{_why(model, version)}"
            )
        raise ModelNotFound(f"model '{name}' has no version {version}")

    def model_versions(self, name: str) -> list[int]:
        model = self._models.get(name)
        if model is None:
            raise ModelNotFound(f"unknown model '{name}'")
        return list(model.served)

    def index(self) -> list[IndexEntry]:
        entries: list[IndexEntry] = []
        for name in sorted(self._models):
            model = self._models[name]
            versions = sorted(set(model.present) | set(model.served) | model.unloading)
            if not versions:
                entries.append(
                    IndexEntry(name, "", UNAVAILABLE, model.config_error or "no versions")
                )
            for version in versions:
                entries.append(IndexEntry(name, str(version), *_state(model, version)))
        return entries

    # -- repository ------------------------------------------------------------------------------

    async def rescan(self) -> None:
        """Scan the repository once and bring every model in line with it."""
        async with self._lock:
            if self._stopping:
                return
            try:
                found = await self._in_loader(scan, self._root)
            except OSError as exc:
                if not self._repository_unreadable:
                    log.warning(
                        "model repository %s cannot be read (%s); loaded models keep serving",
                        self._root,
                        exc,
                    )
                self._repository_unreadable = True
                return
            if self._repository_unreadable:
                log.info("model repository %s is readable again", self._root)
                self._repository_unreadable = False
            for model_dir in found.values():
                await self._reconcile(model_dir)
            for name in [name for name in self._models if name not in found]:
                log.info("model '%s' left the repository; unloading it", name)
                model = self._models.pop(name)
                for loaded in model.served.values():
                    self._retire(model, loaded)
                model.serve({})

    async def load(self, name: str) -> None:
        """Load (or reload) a model now, also one unloaded before; raises if nothing serves."""
        async with self._lock:
            if self._stopping:
                raise ModelNotReady("the server is shutting down")
            try:
                found = await self._in_loader(scan, self._root)
            except OSError as exc:
                raise ModelNotFound(f"model repository cannot be read: {exc}") from None
            if name not in found:
                raise ModelNotFound(f"model '{name}' is not in the repository")
            model = self._models.get(name)
            if model is not None:
                model.unloaded = False
                model.failed.clear()
                model.config_stamp = "unread"
            await self._reconcile(found[name])
            model = self._models[name]
            if not model.served:
                raise InvalidInput(f"failed to load '{name}'{_why(model, None)}")

    async def unload(self, name: str) -> None:
        """Unload every version of a model; it stays unloaded until :meth:`load`."""
        async with self._lock:
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(f"unknown model '{name}'")
            model.unloaded = True
            tasks = [self._retire(model, loaded) for loaded in model.served.values()]
            model.serve({})
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reconcile(self, model_dir: ModelDir) -> None:
        model = self._models.get(model_dir.name)
        if model is None:
            model = self._models[model_dir.name] = _Model(model_dir.name, model_dir.path)
            self._metrics.model_discovered(model.name)
        model.path = model_dir.path
        model.present = model_dir.versions
        for version in [v for v in model.failed if v not in model.present]:
            del model.failed[version]  # gone from the repository: a new one is a new attempt
        if model.unloaded:
            return
        config = self._read_config(model)
        if config is None:
            return  # invalid config.json: keep serving what is served
        candidates, limit = config.version_policy.candidates(list(model.present))
        served: dict[int, LoadedVersion] = {}
        for version in candidates:
            if limit is not None and len(served) >= limit:
                break
            path = model.path / str(version)
            stamp = (*stamp_version(path), stamp_file(model.path / CONFIG_FILE))
            current = model.served.get(version)
            failed = model.failed.get(version)
            if current is not None and current.stamp == stamp:
                served[version] = current
            elif failed is not None and failed[0] == stamp:
                if current is not None:
                    served[version] = current
            else:
                loaded = await self._load_version(model, version, path, stamp, config)
                if loaded is not None:
                    served[version] = loaded
                    if current is not None:
                        current.replaced_by = loaded
                elif current is not None:
                    served[version] = current
        previous = model.served
        model.serve(served)
        for version, loaded in previous.items():
            if model.served.get(version) is not loaded:
                self._retire(model, loaded)

    def _read_config(self, model: _Model) -> EffectiveConfig | None:
        stamp = stamp_file(model.path / CONFIG_FILE)
        if stamp == model.config_stamp:
            return model.config
        model.config_stamp = stamp
        try:
            model.config = resolve(load_model_config(model.path), self._settings)
            model.config_error = ""
        except ModelLoadError as exc:
            model.config = None
            model.config_error = str(exc)
            self._metrics.model_load_failures.labels(model.name).inc()
            log.error("model '%s': %s", model.name, exc)
        return model.config

    async def _load_version(
        self,
        model: _Model,
        version: int,
        path: Path,
        stamp: tuple[FileStamp, ...],
        config: EffectiveConfig,
    ) -> LoadedVersion | None:
        model.loading.add(version)
        try:
            prepared = await self._in_loader(
                prepare_version,
                path,
                config,
                device_id=self._settings.cuda_device_id,
                cancelled=self._cancel_loads.is_set,
            )
        except LoadCancelled:
            log.info("loading model '%s' version %d abandoned: shutting down", model.name, version)
            return None
        except ModelLoadError as exc:
            reason = str(exc)
        except Exception as exc:
            log.exception("loading model '%s' version %d failed", model.name, version)
            reason = f"unexpected error: {exc!r}"
        else:
            model.failed.pop(version, None)
            loaded = LoadedVersion(model.name, version, prepared, config, stamp, self._metrics)
            self._metrics.model_load_duration.labels(model.name).observe(prepared.load_seconds)
            self._metrics.model_loaded.labels(model.name, str(version)).set(1)
            log.info(
                "loaded model '%s' version %d on %s in %.2f s",
                model.name,
                version,
                loaded.provider,
                prepared.load_seconds,
            )
            return loaded
        finally:
            model.loading.discard(version)
        model.failed[version] = (stamp, reason)
        self._metrics.model_load_failures.labels(model.name).inc()
        log.error("cannot load model '%s' version %d: %s", model.name, version, reason)
        return None

    def _retire(self, model: _Model, loaded: LoadedVersion) -> asyncio.Task[None]:
        """Unload in the background: finish its queued requests, then release it."""
        model.unloading.add(loaded.version)
        task = asyncio.create_task(self._finish_retire(model, loaded))
        self._retiring[task] = loaded
        task.add_done_callback(self._retiring.pop)
        return task

    async def _finish_retire(self, model: _Model, loaded: LoadedVersion) -> None:
        try:
            await loaded.close(self._settings.shutdown_grace_s)
        finally:
            model.unloading.discard(loaded.version)
            current = self._models.get(model.name)
            if current is None or loaded.version not in current.served:
                self._metrics.version_unloaded(model.name, str(loaded.version))
            log.info(
                "unloaded model '%s' version %d (%d ONNX Runtime session(s) open)",
                model.name,
                loaded.version,
                live_sessions(),
            )

    async def _in_loader(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run blocking repository work (scans, loads) in the loader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._loader, functools.partial(fn, *args, **kwargs))


def _state(model: _Model, version: int) -> tuple[str, str]:
    if version in model.served:
        failed = model.failed.get(version)
        if failed is not None:  # changed on disk, and the change does not load
            return READY, f"serving the copy loaded before; reloading failed: {failed[1]}"
        return READY, ""
    if version in model.loading:
        return LOADING, ""
    if version in model.unloading:
        return UNLOADING, ""
    if model.unloaded:
        return UNAVAILABLE, "unloaded"
    failed = model.failed.get(version)
    if failed is not None:
        return UNAVAILABLE, failed[1]
    if model.config_error:
        return UNAVAILABLE, model.config_error
    return UNAVAILABLE, "not served under the version policy"


def _why(model: _Model, version: int | None) -> str:
    if version is not None:
        _, reason = _state(model, version)
        return f": {reason}" if reason else ""
    if model.unloaded:
        return ": unloaded"
    if model.config_error:
        return f": {model.config_error}"
    reasons = [model.failed[v][1] for v in sorted(model.failed, reverse=True)]
    return f": {reasons[0]}" if reasons else ""
