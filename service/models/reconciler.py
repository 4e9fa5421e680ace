"""Keeping the served versions in line with the repository: scan, policy, load, swap, retire.

A poll (every ``poll_interval_s``) scans the repository and reconciles each model with its
version policy. A new or changed version is loaded and warmed in a thread before it replaces
anything; the version it replaces stops being handed out at once, finishes the requests already
queued for it, then releases its session. A version that fails to load leaves what was serving
untouched; its reason shows in :meth:`Registry.index` and it is retried only when its files
change. A version replaced in place on disk is reloaded, and requests that found the old copy are
passed to the new one. A repository that cannot be read keeps what is loaded serving. On shutdown
a load in progress is abandoned at its next step.

Each (model, version) has one record with an explicit state (:mod:`service.models.state`);
handlers read the records through the :class:`Registry`, and only this module changes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from modelrepo import CONFIG_FILE, ModelDir, scan, stamp_file, stamp_version
from service.errors import InvalidInput, ModelLoadError, ModelNotFound
from service.metrics.families import Metrics
from service.models.config import EffectiveConfig, load_model_config, resolve
from service.models.loader import LoadCancelled, prepare_version
from service.models.registry import Registry
from service.models.served import ServedVersion
from service.models.state import (
    UNREAD,
    ModelRecord,
    ServingStatus,
    Stamp,
    VersionRecord,
)
from service.runtime.provider import choose_provider
from service.runtime.session import live_sessions
from service.settings import Settings

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")

Chosen = dict[int, tuple[ServedVersion, Stamp]]


class Reconciler:
    """Loads the repository, keeps it in sync, and publishes what serves through ``registry``."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._root = settings.model_repository
        self._models: dict[str, ModelRecord] = {}
        self._status = ServingStatus()
        self.registry = Registry(self._models, self._status)
        self._lock = asyncio.Lock()
        self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-load")
        self._cancel_loads = threading.Event()
        self._retiring: dict[asyncio.Task[None], ServedVersion] = {}
        self._poll_task: asyncio.Task[None] | None = None
        self._repository_unreadable = False
        self._in_flight: tuple[str, int] | None = None  # the load running in the loader thread

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Choose the provider, load the repository, start polling."""
        choice = choose_provider(self._settings.provider, self._settings.cuda_device_id)
        self._status.provider = choice.provider
        log.info("execution provider: %s (%s)", choice.provider, choice.reason)
        await self.rescan()
        self._status.started = True
        if self._settings.poll_interval_s > 0:
            self._poll_task = asyncio.create_task(self._poll(), name="repository-poll")

    def stop_loading(self) -> None:
        """Abandon the load in progress and any later one (safe from any thread or a signal)."""
        self._cancel_loads.set()

    def abort(self) -> None:
        """Answer 503 now to every request queued or computing, in every version (grace is over)."""
        serving = [copy for model in self._models.values() for copy in model.served().values()]
        for copy in [*serving, *self._retiring.values()]:
            copy.abort()

    async def shutdown(self) -> None:
        """Stop polling, drain every version within ``shutdown_grace_s``, release sessions."""
        self._status.stopping = True
        self._cancel_loads.set()
        if self._in_flight is not None:
            log.info("abandoning the load of model '%s' version %d", *self._in_flight)
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        async with self._lock:
            for model in self._models.values():
                self._retire_all(model)
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

    # -- repository ------------------------------------------------------------------------------

    async def rescan(self) -> None:
        """Scan the repository once and bring every model in line with it."""
        async with self._lock:
            if self._status.stopping:
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
                self._retire_all(self._models.pop(name))

    async def load(self, name: str) -> None:
        """Load (or reload) a model now, also one unloaded before; raises if nothing serves."""
        async with self._lock:
            self._status.refuse_if_stopping()
            try:
                found = await self._in_loader(scan, self._root)
            except OSError as exc:
                raise ModelNotFound(f"model repository cannot be read: {exc}") from None
            if name not in found:
                raise ModelNotFound(f"model '{name}' is not in the repository")
            model = self._models.get(name)
            if model is not None:
                model.unloaded = False
                model.config_stamp = UNREAD
                for record in model.versions.values():
                    record.forget_failure()
            await self._reconcile(found[name])
            model = self._models[name]
            if model.latest is None:
                raise InvalidInput(f"failed to load '{name}'{model.why_not_ready()}")

    async def unload(self, name: str) -> None:
        """Unload every version of a model; it stays unloaded until :meth:`load`."""
        async with self._lock:
            self._status.refuse_if_stopping()
            model = self._models.get(name)
            if model is None:
                raise ModelNotFound(f"unknown model '{name}'")
            model.unloaded = True
            tasks = self._retire_all(model)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _reconcile(self, model_dir: ModelDir) -> None:
        model = self._models.get(model_dir.name)
        if model is None:
            model = self._models[model_dir.name] = ModelRecord(model_dir.name, model_dir.path)
            self._metrics.model_discovered(model.name)
        model.path = model_dir.path
        model.track(model_dir.versions)
        try:
            config = None if model.unloaded else self._read_config(model)
            if config is not None:  # an invalid config.json keeps what is served serving
                self._swap(model, await self._choose(model, config))
        finally:
            model.settle()

    async def _choose(self, model: ModelRecord, config: EffectiveConfig) -> Chosen:
        """The copies to serve under the version policy: served ones whose files are unchanged,
        and fresh loads of new or changed versions (a failed load keeps the old copy)."""
        candidates, limit = config.version_policy.candidates(model.on_disk())
        config_path = model.path / CONFIG_FILE
        chosen: Chosen = {}
        for version in candidates:
            if limit is not None and len(chosen) >= limit:
                break
            record = model.versions[version]
            stamp = (*stamp_version(model.path / str(version)), stamp_file(config_path))
            current = record.serving
            if current is not None and record.stamp == stamp:
                chosen[version] = (current, record.stamp)
                continue
            failed_before = record.failure is not None and record.failure.stamp == stamp
            loaded = None if failed_before else await self._load(model, record, stamp, config)
            if loaded is not None:
                chosen[version] = (loaded, stamp)
            elif current is not None:
                chosen[version] = (current, record.stamp)
        return chosen

    def _swap(self, model: ModelRecord, chosen: Chosen) -> None:
        """Hand out the chosen copies at once; retire every copy they replace."""
        for version, record in model.versions.items():
            previous = record.serving
            entry = chosen.get(version)
            copy = entry[0] if entry is not None else None
            if copy is previous:
                continue
            if entry is not None:
                record.serve(*entry)
            if previous is not None:
                previous.replaced_by = copy  # reloaded in place: requests that found it go on
                self._retire(model, record, previous)

    def _read_config(self, model: ModelRecord) -> EffectiveConfig | None:
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

    async def _load(
        self, model: ModelRecord, record: VersionRecord, stamp: Stamp, config: EffectiveConfig
    ) -> ServedVersion | None:
        version = record.version
        record.begin_load()
        self._in_flight = (model.name, version)
        try:
            prepared = await self._in_loader(
                prepare_version,
                model.path / str(version),
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
            loaded = ServedVersion(model.name, version, prepared, config, self._metrics)
            self._metrics.model_load_duration.labels(model.name).observe(prepared.load_seconds)
            self._metrics.model_loaded.labels(model.name, str(version)).set(1)
            if prepared.index is not None:
                labels = (model.name, str(version))
                self._metrics.retrieval_index_build.labels(*labels).set(prepared.index.seconds)
                self._metrics.retrieval_index_memory.labels(*labels).set(
                    prepared.index.index.nbytes
                )
            log.info(
                "loaded model '%s' version %d on %s in %.2f s",
                model.name,
                version,
                loaded.provider,
                prepared.load_seconds,
            )
            return loaded
        finally:
            self._in_flight = None
        record.fail(stamp, reason)
        self._metrics.model_load_failures.labels(model.name).inc()
        log.error("cannot load model '%s' version %d: %s", model.name, version, reason)
        return None

    # -- retiring --------------------------------------------------------------------------------

    def _retire_all(self, model: ModelRecord) -> list[asyncio.Task[None]]:
        served = model.served().items()
        tasks = [self._retire(model, model.versions[v], copy) for v, copy in served]
        model.settle()
        return tasks

    def _retire(
        self, model: ModelRecord, record: VersionRecord, copy: ServedVersion
    ) -> asyncio.Task[None]:
        """Unload in the background: finish its queued requests, then release it."""
        record.retire(copy)
        task = asyncio.create_task(self._finish_retire(model, record, copy))
        self._retiring[task] = copy
        task.add_done_callback(self._retiring.pop)
        return task

    async def _finish_retire(
        self, model: ModelRecord, record: VersionRecord, copy: ServedVersion
    ) -> None:
        try:
            await copy.close(self._settings.shutdown_grace_s)
        finally:
            model.drained(record)
            current = self._models.get(model.name)
            still = current.versions.get(copy.version) if current is not None else None
            if still is None or still.serving is None:
                self._metrics.version_unloaded(model.name, str(copy.version))
            log.info(
                "unloaded model '%s' version %d (%d ONNX Runtime session(s) open)",
                model.name,
                copy.version,
                live_sessions(),
            )

    async def _in_loader(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """Run blocking repository work (scans, loads) in the loader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._loader, functools.partial(fn, *args, **kwargs))
