"""The app in-process over a stand-in reconciler: the harness of the HTTP edge's tests.

:class:`FakeReconciler` is both the reconciler and its registry; it serves model ``m``, versions
1 and 2, each a :class:`FakeVersion` whose score is ``user * 10 + item`` (plus an INT64 output
``twice`` = ``user * 2``) over the two-id signature, with vocabularies ``u1..u9`` and ``i1..i9``
(rows 1..9). A test may give a version another signature: its inputs are found by their source.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI

from modelrepo import (
    History,
    InputSpec,
    Manifest,
    Signature,
    Source,
    Vocabulary,
    two_id_signature,
)
from service.app import create_app
from service.errors import ModelNotFound
from service.http.fastpath import FastPath
from service.http.state import STATE_KEY, AppState
from service.metrics.families import Metrics
from service.metrics.stats import VersionStats
from service.models.config import ModelConfig, resolve
from service.models.registry import IndexEntry
from service.runtime.provider import CPU
from service.runtime.session import TensorSpec
from service.settings import Settings

TOKEN = "let-me-in"
Answer = tuple[int, bytes, dict[str, str]]
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "retry-after",
    "inference-header-content-length",
)
N_IDS = 9


def infer_doc(users: list[int], items: list[int], **extra: Any) -> dict[str, Any]:
    """A V2 JSON infer request of user and item rows."""
    return {
        "inputs": [
            {"name": "user", "shape": [len(users)], "datatype": "INT64", "data": users},
            {"name": "item", "shape": [len(items)], "datatype": "INT64", "data": items},
        ],
        **extra,
    }


class FakeVersion:
    """A served version whose score is ``user * 10 + item``; ``fail_with`` makes infer raise."""

    def __init__(self, settings: Settings, name: str = "m", version: int = 1) -> None:
        self.name = name
        self.version = version
        self.signature: Signature = two_id_signature(N_IDS + 1, N_IDS + 1)
        self.manifest = Manifest(kind="fake", signature=self.signature)
        self.history: History | None = None
        self.inputs = (TensorSpec("user", "INT64", (-1,)), TensorSpec("item", "INT64", (-1,)))
        self.outputs = (TensorSpec("score", "FP32", (-1,)), TensorSpec("twice", "INT64", (-1,)))
        self.config = resolve(ModelConfig(), settings)
        self.stats = VersionStats(name, str(version))
        self.provider = CPU
        self.fail_with: Exception | None = None
        self.seen: list[dict[str, np.ndarray]] = []
        self.vocabularies = {
            source: Vocabulary([f"{source.value[0]}{i}" for i in range(1, N_IDS + 1)])
            for source in (Source.USER, Source.ITEM)
        }

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.fail_with is not None:
            raise self.fail_with
        self.seen.append(dict(inputs))
        user, item = (inputs[self._input(source).name] for source in (Source.USER, Source.ITEM))
        return {self.signature.score: (user * 10 + item).astype(np.float32), "twice": user * 2}

    async def infer_built(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return await self.infer(feeds)  # /v1's feeds: the same answers, without the checks

    def _input(self, source: Source) -> InputSpec:
        spec = self.signature.one_from(source)
        assert spec is not None
        return spec

    def vocabulary(self, spec: InputSpec) -> Vocabulary:
        return self.vocabularies[spec.source]

    def rows(self, spec: InputSpec, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        return self.vocabularies[spec.source].rows(ids)


class FakeReconciler:
    """Reconciler and registry at once, recording what handlers asked of it."""

    provider = CPU

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.versions_served = {v: FakeVersion(settings, version=v) for v in (1, 2)}
        self.ready = False
        self.started = self.stopped = False
        self.loaded: list[str] = []
        self.unloaded: list[str] = []
        self.lookups: list[tuple[str, int | None]] = []

    @property
    def registry(self) -> FakeReconciler:
        return self

    async def start(self) -> None:
        self.started = self.ready = True

    async def shutdown(self) -> None:
        self.stopped, self.ready = True, False

    def get(self, name: str, version: int | None = None) -> FakeVersion:
        self.lookups.append((name, version))
        if name != "m":
            raise ModelNotFound(f"unknown model '{name}'")
        if version is None:
            return self.versions_served[max(self.versions_served)]
        if version not in self.versions_served:
            raise ModelNotFound(f"model 'm' has no version {version}")
        return self.versions_served[version]

    def versions(self, name: str) -> list[int]:
        return sorted(self.versions_served)

    def index(self) -> list[IndexEntry]:
        return [
            IndexEntry("m", "1", "READY", ""),
            IndexEntry("m", "2", "READY", ""),
            IndexEntry("broken", "1", "UNAVAILABLE", "bad model.onnx"),
        ]

    async def load(self, name: str) -> None:
        if name != "m":
            raise ModelNotFound(f"model '{name}' is not in the repository")
        self.loaded.append(name)

    async def unload(self, name: str) -> None:
        self.unloaded.append(name)


class Harness:
    """The app, a client of it, and what the tests read of its state and metrics."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient) -> None:
        self.app = app
        self.client = client

    @property
    def state(self) -> AppState:
        state: AppState = getattr(self.app.state, STATE_KEY)
        return state

    @property
    def reconciler(self) -> FakeReconciler:
        reconciler: object = self.state.reconciler
        assert isinstance(reconciler, FakeReconciler)
        return reconciler

    def version(self, number: int) -> FakeVersion:
        return self.reconciler.versions_served[number]

    def value(self, name: str, **labels: str) -> float | None:
        return self.state.metrics.registry.get_sample_value(name, labels)

    def counter(self, endpoint: str, code: int, model: str = "", version: str = "") -> float:
        labels = {"model": model, "version": version, "endpoint": endpoint, "code": str(code)}
        return self.value("recserve_requests_total", **labels) or 0.0

    def samples(self) -> dict[tuple[str, ...], float]:
        """Every request counter and duration count, by labels."""
        found: dict[tuple[str, ...], float] = {}
        for family in self.state.metrics.registry.collect():
            if family.name not in ("recserve_requests", "recserve_request_duration_seconds"):
                continue
            for sample in family.samples:
                if sample.name.endswith(("_total", "_count")):
                    found[(sample.name, *sorted(sample.labels.items()))] = sample.value  # type: ignore[arg-type]
        return found

    async def answer(self, method: str, path: str, **kwargs: Any) -> Answer:
        """Status, body and the headers both paths must agree on."""
        response = await self.client.request(method, path, **kwargs)
        headers = {k: response.headers[k] for k in COMPARED_HEADERS if k in response.headers}
        return response.status_code, response.content, headers


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"poll_interval_s": 0, "max_request_bytes": 4096}
    return Settings(**{**values, **overrides})


def build_app(app_settings: Settings | None = None, **kwargs: Any) -> FastAPI:
    factory: Any = FakeReconciler
    return create_app(app_settings or settings(), reconciler_factory=factory, **kwargs)


@asynccontextmanager
async def serving(*, fast_path: bool = True, **overrides: Any) -> AsyncIterator[Harness]:
    """The app started (its lifespan) with a client; ``overrides``: settings.

    Exceptions raised out of the app fail the test: the observer must answer every one.
    """
    app = build_app(settings(**overrides))
    if not fast_path:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not FastPath]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield Harness(app, client)
