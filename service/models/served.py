"""One served model version, its data plane: check inputs against the signature, look up ids, queue.

Every request is checked before it is queued, so that a malformed one is answered 400 alone
instead of failing the batch it would have joined. The checks follow each input's role: an id
input takes integers ``[-1]`` (a ``[-1, 1]`` column too) within its table's rows; a multi-hot
input takes integers ``[-1, L]`` within its vocabulary's rows (0 pads); a dense input takes finite
floats ``[-1, width]``.

A refusal names the input and the offending value as the client sent it (a UINT64 above the
int64 range is that number, not what it wraps to), never the size of a table: that is the
model's business, not the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NoReturn

import numpy as np

from modelrepo import History, InputSpec, Manifest, Role, Signature, Vocabulary
from service.batching.batcher import Batcher
from service.errors import InvalidInput
from service.metrics.batch import BatchMetrics
from service.metrics.families import Metrics
from service.metrics.stats import VersionStats
from service.models.config import EffectiveConfig
from service.models.loader import PreparedVersion
from service.retrieval.build import BuiltIndex
from service.runtime.conformance import signature_specs
from service.runtime.session import KSERVE_TO_NUMPY

Convert = Callable[[InputSpec, np.ndarray], np.ndarray]


class ServedVersion:
    """One version taking requests: its signature, vocabularies, config, statistics and batcher."""

    def __init__(
        self,
        name: str,
        version: int,
        prepared: PreparedVersion,
        config: EffectiveConfig,
        metrics: Metrics,
    ) -> None:
        self.name = name
        self.version = version
        self.path = prepared.stored.path
        self.manifest: Manifest = prepared.stored.manifest
        self.signature: Signature = self.manifest.signature
        self.history: History | None = prepared.stored.history  # what /v1 leaves out as seen
        self.retrieval: BuiltIndex | None = prepared.index  # two-stage recommend's first stage
        # Feature tables by file, then input name: where /v1 finds the user's and items' features.
        self.tables: Mapping[str, Mapping[str, np.ndarray]] = prepared.stored.tables
        self.config = config
        self.provider = prepared.runtime.provider
        self.stats = VersionStats(name, str(version))
        self.inputs, self.outputs = signature_specs(self.signature)
        self.replaced_by: ServedVersion | None = None  # set when reloaded in place
        self._holders = 0  # requests awaiting between finding this version and queueing on it
        self._unheld = asyncio.Event()
        self._unheld.set()
        self._runtime = prepared.runtime
        self._metrics = metrics
        self._vocabularies = {
            spec.name: prepared.stored.vocabulary(spec)
            for spec in self.signature.inputs
            if spec.vocabulary is not None
        }
        self._batcher = Batcher(
            prepared.runtime.run,
            config.batching,
            observers=(self.stats, BatchMetrics(metrics, name, str(version))),
            name=f"{name}-{version}",
        )
        self._names = frozenset(spec.name for spec in self.signature.inputs)
        self._checks: tuple[tuple[InputSpec, Convert, int], ...] = tuple(
            (spec, _CONVERT[spec.role], _row_limit(spec)) for spec in self.signature.inputs
        )
        self._empty = {
            spec.name: np.empty((0, *spec.shape[1:]), dtype=_numpy_type(spec.datatype))
            for spec in self.outputs
        }

    @property
    def queued_rows(self) -> int:
        return self._batcher.queued_rows

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check every input against the signature, then queue them; returns the outputs."""
        feeds, n = self._validate(inputs)
        return await self._queue(feeds, n)

    async def infer_built(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Queue feeds the server built itself from this version's vocabularies and tables
        (``/v1``: every input of the signature, of its type and shape, rows within range; what a
        caller sent already checked and encoded), without :meth:`infer`'s per-input checks, which
        a caller's tensors need and these would only repeat."""
        return await self._queue(feeds, next(iter(feeds.values())).shape[0])

    async def _queue(self, feeds: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        if n == 0:
            return dict(self._empty)
        if self._batcher.closing and self.replaced_by is not None:
            return await self.replaced_by.infer(feeds)
        return await self._batcher.submit(feeds)

    def _validate(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        names = self._names
        if len(inputs) != len(names) or any(name not in names for name in inputs):
            missing = [spec.name for spec in self.signature.inputs if spec.name not in inputs]
            unexpected = [name for name in inputs if name not in names]
            raise InvalidInput(
                f"model '{self.name}' takes inputs {sorted(names)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unexpected {unexpected}" if unexpected else "")
            )
        feeds: dict[str, np.ndarray] = {}
        n = -1
        for spec, convert, limit in self._checks:
            value = convert(spec, inputs[spec.name])
            if n < 0:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise InvalidInput(
                    f"inputs must have the same number of rows; '{spec.name}' has "
                    f"{value.shape[0]}, expected {n}"
                )
            feeds[spec.name] = self._in_range(spec, value, limit) if limit else value
        return feeds, n

    def _in_range(self, spec: InputSpec, rows: np.ndarray, limit: int) -> np.ndarray:
        """An id or bag input's rows as int64, checked against ``[0, limit)`` before the
        conversion, so that a refused value is reported as sent."""
        if rows.size and (rows.min() < 0 or rows.max() >= limit):
            flat = int(np.flatnonzero((rows < 0) | (rows >= limit))[0])
            at = np.unravel_index(flat, rows.shape)
            where = ", ".join(str(int(i)) for i in at)
            raise InvalidInput(
                f"input '{spec.name}' value {int(rows[at])} at index {where} is out of range "
                f"for model '{self.name}' version {self.version}"
            )
        return rows if rows.dtype == np.int64 else rows.astype(np.int64)

    def vocabulary(self, spec: InputSpec) -> Vocabulary:
        """The vocabulary an id input of this version's signature is bound to."""
        return self._vocabularies[spec.name]

    def rows(self, spec: InputSpec, ids: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """Rows of raw ids for ``spec`` and the unknown ones (served from row 0; counted)."""
        rows, unknown = self._vocabularies[spec.name].rows(ids)
        if unknown:
            self.count_unknown(spec.source.value, len(unknown))
        return rows, unknown

    def count_unknown(self, kind: str, n: int) -> None:
        """Count ``n`` values served from an unknown row: ``kind`` is ``user`` or ``item`` for
        ids, ``<field>:<feature>`` for a feature value a ``/v1`` request sent."""
        self._metrics.unknown_ids.labels(self.name, str(self.version), kind).inc(n)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Keep this version from closing while a request that found it awaits something before
        it queues (two-stage recommend's retrieval runs in a thread): a retirement waits for it,
        so that a hot swap fails no request. Queue without awaiting after leaving the block."""
        self._holders += 1
        self._unheld.clear()
        try:
            yield
        finally:
            self._holders -= 1
            if self._holders == 0:
                self._unheld.set()

    async def close(self, grace_s: float) -> None:
        """Wait for the requests holding it, finish queued requests (each within ``grace_s``),
        then release the session."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._unheld.wait(), grace_s)
        await self._batcher.drain(grace_s)
        self._runtime.close()

    def abort(self) -> None:
        """Refuse new requests and answer every queued or computing one 503 at once."""
        self._batcher.abort()


def _numpy_type(datatype: str) -> type[np.generic]:
    return KSERVE_TO_NUMPY.get(datatype, np.float32)


def _row_limit(spec: InputSpec) -> int:
    """The end of an id or bag input's range (values in ``[0, n_rows)``); 0: a dense input."""
    if spec.role is Role.DENSE:
        return 0
    assert spec.n_rows is not None  # the signature requires it of an id or multi-hot input
    return spec.n_rows


def _as_rows(spec: InputSpec, value: np.ndarray) -> np.ndarray:
    """An id input as integers ``[-1]``, a column flattened; still in the type sent, converted
    to int64 once its range is checked."""
    if value.dtype.kind not in "iu":
        _refuse_datatype(spec, value)
    if value.ndim != 1:
        if value.ndim == 2 and value.shape[1] == 1:
            return value.reshape(-1)
        _refuse_shape(spec, value)
    return value


def _as_bags(spec: InputSpec, value: np.ndarray) -> np.ndarray:
    """A multi-hot input as integers ``[-1, L]``, in the type sent (converted once in range)."""
    if value.dtype.kind not in "iu":
        _refuse_datatype(spec, value)
    if value.ndim != 2 or value.shape[1] != spec.width:
        _refuse_shape(spec, value)
    return value


def _as_features(spec: InputSpec, value: np.ndarray) -> np.ndarray:
    """A dense input as float32 ``[-1, width]``; other float types are converted."""
    if value.dtype != np.float32:
        if value.dtype.kind != "f":
            _refuse_datatype(spec, value)
        value = value.astype(np.float32)
    if value.ndim != 2 or value.shape[1] != spec.width:
        _refuse_shape(spec, value)
    if not np.isfinite(value).all():
        at = int(np.flatnonzero(~np.isfinite(value).all(axis=1))[0])
        raise InvalidInput(f"input '{spec.name}' row {at} holds a value that is not finite")
    return value


_CONVERT: dict[Role, Convert] = {
    Role.ID: _as_rows,
    Role.MULTI_HOT: _as_bags,
    Role.DENSE: _as_features,
}


def _refuse_datatype(spec: InputSpec, value: np.ndarray) -> NoReturn:
    raise InvalidInput(
        f"input '{spec.name}' has datatype {value.dtype.name}; expected {spec.dtype}"
    )


def _refuse_shape(spec: InputSpec, value: np.ndarray) -> NoReturn:
    raise InvalidInput(
        f"input '{spec.name}' has shape {list(value.shape)}; expected {list(spec.shape)}"
    )
