"""Which ONNX Runtime execution provider a session runs on: CUDA where a GPU is usable, else CPU.

``onnxruntime-gpu`` lists the CUDA provider even where there is no GPU, and asking for it there
logs a loud error; :func:`probe_gpu` therefore asks the CUDA driver itself (through ``ctypes``)
whether a device exists before CUDA is ever requested.
"""

from __future__ import annotations

import ctypes
import functools
from dataclasses import dataclass
from typing import Literal

import onnxruntime as ort

from service.errors import ModelLoadError

Provider = Literal["auto", "cuda", "cpu"]  # what the settings may ask for

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


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
