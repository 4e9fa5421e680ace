"""ONNX Runtime for one model version: provider choice, session, contract check, warmup, run.

``onnxruntime-gpu`` lists the CUDA provider even where there is no GPU, and asking for it there
logs a loud error; :func:`probe_gpu` therefore asks the CUDA driver itself (through ``ctypes``)
whether a device exists before CUDA is ever requested.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

from service.errors import ModelLoadError
from service.settings import Provider

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

# The serving contract (design.md §3): two int64 row vectors in, one float32 score vector out.
CONTRACT_INPUTS = {"user": "INT64", "item": "INT64"}
CONTRACT_OUTPUTS = {"score": "FP32"}

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


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: KServe datatype name and shape (``-1`` is the batch dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class ProviderChoice:
    provider: str
    reason: str


def probe_gpu(device_id: int = 0) -> tuple[bool, str]:
    """Whether GPU ``device_id`` is usable, and why, asking the driver rather than ONNX Runtime."""
    if CUDA not in ort.get_available_providers():
        return False, "this onnxruntime build has no CUDA provider"
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no NVIDIA driver (libcuda.so.1 not found)"
    status = libcuda.cuInit(0)
    if status != 0:
        return False, f"the CUDA driver found no usable GPU (cuInit returned {status})"
    count = ctypes.c_int(0)
    status = libcuda.cuDeviceGetCount(ctypes.byref(count))
    if status != 0 or count.value == 0:
        return False, "the CUDA driver reports no GPU"
    if device_id >= count.value:
        return False, f"GPU {device_id} requested but only {count.value} present"
    return True, f"{count.value} GPU(s) found, using GPU {device_id}"


@functools.cache
def _probe_cached(device_id: int) -> tuple[bool, str]:
    return probe_gpu(device_id)


def choose_provider(preference: Provider, device_id: int = 0) -> ProviderChoice:
    """``auto``: CUDA only where a GPU is present; ``cuda``: CUDA or an error; ``cpu``: CPU."""
    if preference == "cpu":
        return ProviderChoice(CPU, "provider 'cpu' configured")
    has_gpu, why = _probe_cached(device_id)
    if has_gpu:
        return ProviderChoice(CUDA, f"provider '{preference}': {why}")
    if preference == "cuda":
        raise ModelLoadError(f"provider 'cuda' configured but not usable: {why}")
    return ProviderChoice(CPU, f"provider 'auto': {why}")


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


def check_contract(inputs: Iterable[TensorSpec], outputs: Iterable[TensorSpec]) -> None:
    """Raise :class:`ModelLoadError` unless the graph has the contract's inputs and outputs."""
    got_in = {s.name: s for s in inputs}
    got_out = {s.name: s for s in outputs}
    if set(got_in) != set(CONTRACT_INPUTS):
        raise ModelLoadError(
            f"model inputs {sorted(got_in)} do not match the contract {sorted(CONTRACT_INPUTS)}"
        )
    missing = sorted(set(CONTRACT_OUTPUTS) - set(got_out))
    if missing:
        raise ModelLoadError(f"model has no output {missing} (outputs: {sorted(got_out)})")
    _check_specs("input", got_in, CONTRACT_INPUTS)
    _check_specs("output", got_out, CONTRACT_OUTPUTS)


def _check_specs(kind: str, specs: Mapping[str, TensorSpec], contract: Mapping[str, str]) -> None:
    for name, datatype in contract.items():
        spec = specs[name]
        if spec.datatype != datatype:
            raise ModelLoadError(
                f"model {kind} '{name}' has datatype {spec.datatype}, expected {datatype}"
            )
        if len(spec.shape) != 1:
            raise ModelLoadError(
                f"model {kind} '{name}' has shape {list(spec.shape)}, expected [-1]"
            )


class Runtime:
    """An ONNX Runtime session of one model version. ``run`` is safe to call from threads."""

    def __init__(
        self,
        model: bytes,
        *,
        provider: str = CPU,
        device_id: int = 0,
        intra_op_threads: int = 0,
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
        self.provider: str = self._session.get_providers()[0]
        self.inputs = tuple(_spec(node) for node in self._session.get_inputs())
        self.outputs = tuple(_spec(node) for node in self._session.get_outputs())
        self._output_names = [spec.name for spec in self.outputs]
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run raises; do not also log it

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self._session.run(self._output_names, dict(feeds), self._run_options)
        return dict(zip(self._output_names, results, strict=True))

    def warmup(self, batch_sizes: Iterable[int], n_rows: Mapping[str, int]) -> None:
        """Run the first and last row of every table, then each batch size once.

        The last-row run proves each embedding table holds as many rows as the metadata claims.
        """
        edges = {name: np.array([0, rows - 1], dtype=np.int64) for name, rows in n_rows.items()}
        try:
            self.run(edges)
        except Exception as exc:
            last = ", ".join(f"{name} {rows - 1}" for name, rows in n_rows.items())
            raise ModelLoadError(
                f"the model's tables do not hold the rows its metadata claims "
                f"(last rows: {last}): {exc}"
            ) from None
        for size in batch_sizes:
            feeds = {name: np.arange(size, dtype=np.int64) % rows for name, rows in n_rows.items()}
            try:
                results = self.run(feeds)
            except Exception as exc:
                raise ModelLoadError(f"warmup run of {size} rows failed: {exc}") from None
            for name, value in results.items():
                if value.shape[:1] != (size,):
                    raise ModelLoadError(
                        f"warmup: output '{name}' has shape {list(value.shape)} for {size} rows"
                    )

    def close(self) -> None:
        """Release the session (its memory goes once no run still holds it)."""
        self.__dict__.pop("_session", None)
