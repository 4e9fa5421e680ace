"""An ONNX Runtime session of one model version: load, run (bound and padded on the GPU), close.

The provider is chosen in :mod:`service.runtime.provider`, the graph is checked against the
version's signature in :mod:`service.runtime.conformance` and warmed up in
:mod:`service.runtime.warmup`.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from service.errors import ModelLoadError
from service.runtime.provider import CPU, CUDA

__all__ = [
    "CPU",
    "CUDA",
    "KSERVE_TO_NUMPY",
    "ORT_TO_KSERVE",
    "Runtime",
    "TensorSpec",
    "bucket_rows",
    "bucket_sizes",
    "live_sessions",
]

# ONNX Runtime's tensor type names -> KServe V2 datatypes.
ORT_TO_KSERVE = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
KSERVE_TO_NUMPY: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


# Every ONNX Runtime session not yet garbage-collected, to prove that unloaded versions free theirs.
_live_sessions: weakref.WeakSet[Any] = weakref.WeakSet()


def live_sessions() -> int:
    """How many ONNX Runtime sessions this process still holds (closed ones drop out once freed)."""
    return len(_live_sessions)


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: KServe datatype name and shape (``-1`` is the batch dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@functools.cache
def _preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the pip-installed NVIDIA wheels, once."""
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only; failed runs are reported by the batcher
    # Idle intra-op threads would otherwise spin after each run, taking CPU from the event loop.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _spec(node: Any) -> TensorSpec:
    datatype = ORT_TO_KSERVE.get(node.type, node.type)
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    return TensorSpec(node.name, datatype, shape)


class Runtime:
    """An ONNX Runtime session of one model version. ``run`` is safe to call from threads."""

    def __init__(
        self,
        model: bytes,
        *,
        provider: str = CPU,
        device_id: int = 0,
        intra_op_threads: int = 0,
        bind_io: bool | None = None,
        pad_rows: bool | None = None,
    ) -> None:
        providers: list[Any] = [CPU]
        if provider == CUDA:
            _preload_cuda_libraries()
            providers = [(CUDA, {"device_id": device_id}), CPU]
        try:
            self._session = ort.InferenceSession(
                model, _session_options(intra_op_threads), providers=providers
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad models
            raise ModelLoadError(f"onnxruntime cannot load model.onnx: {exc}") from None
        _live_sessions.add(self._session)
        self.provider: str = self._session.get_providers()[0]
        self.inputs = tuple(_spec(node) for node in self._session.get_inputs())
        self.outputs = tuple(_spec(node) for node in self._session.get_outputs())
        self._output_names = [spec.name for spec in self.outputs]
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run raises; do not also log it
        on_gpu = self.provider == CUDA
        # Both on by default on the GPU only; either can be switched on for the CPU (tests do).
        self.bind_io = on_gpu if bind_io is None else bind_io
        self.pad_rows = on_gpu if pad_rows is None else pad_rows
        self._device = ("cuda", device_id) if on_gpu else ("cpu", 0)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs of one batch, one row per input row.

        With ``pad_rows`` the batch is padded with zeros (row 0, the unknown row, for an id input)
        up to :func:`bucket_rows`, so that the session sees a few shapes again and again, and the
        outputs are cut back to the batch's rows.
        """
        n = _rows(feeds)
        padded = bucket_rows(n) if self.pad_rows and n else n
        if padded != n:
            feeds = {name: _pad(value, padded) for name, value in feeds.items()}
        if self.bind_io:
            outputs = self._run_bound(feeds)
        else:
            results = self._session.run(self._output_names, dict(feeds), self._run_options)
            outputs = dict(zip(self._output_names, results, strict=True))
        if padded != n:
            outputs = {name: value[:n] for name, value in outputs.items()}
        return outputs

    def _run_bound(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One run through an IOBinding: inputs copied to the device once, outputs left there by
        the run and copied back to host memory together afterwards."""
        binding = self._session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        device, device_id = self._device
        for name in self._output_names:
            binding.bind_output(name, device, device_id)
        self._session.run_with_iobinding(binding, self._run_options)
        return dict(zip(self._output_names, binding.copy_outputs_to_cpu(), strict=True))

    def close(self) -> None:
        """Release the session (its memory goes once no run still holds it)."""
        self.__dict__.pop("_session", None)


SMALLEST_BUCKET = 64


def bucket_rows(n: int) -> int:
    """The padded size of a batch of ``n`` rows: the next power of two, at least 64.

    A GPU session pays a first-run cost for every new input shape; padding to powers of two
    keeps the shapes to a handful (64 .. 8,192 for the default ``max_batch_rows``).
    """
    return max(SMALLEST_BUCKET, 1 << (n - 1).bit_length())


def bucket_sizes(rows: int) -> list[int]:
    """Every padded size up to that of a batch of ``rows`` rows."""
    return [
        1 << bits
        for bits in range(SMALLEST_BUCKET.bit_length() - 1, bucket_rows(rows).bit_length())
    ]


def _rows(feeds: Mapping[str, np.ndarray]) -> int:
    return next((value.shape[0] for value in feeds.values() if value.ndim), 0)


def _pad(value: np.ndarray, rows: int) -> np.ndarray:
    """``value`` followed by zero rows up to ``rows`` (row 0 of a table is the unknown row)."""
    padded = np.zeros((rows, *value.shape[1:]), dtype=value.dtype)
    padded[: value.shape[0]] = value
    return padded
