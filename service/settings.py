"""Server settings: one pydantic object, read from ``RECSERVE_*`` environment variables and flags.

Nothing here is built at import time; ``Settings()`` is constructed by the CLI (or a test) and
handed to ``create_app``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Provider = Literal["auto", "cuda", "cpu"]


class BatchingSettings(BaseModel):
    """Server-wide batching defaults; a model's ``config.json`` may override each one.

    A plain model, not a settings source of its own: its environment variables are the nested
    ``RECSERVE_BATCHING__<FIELD>`` ones of :class:`Settings`.
    """

    model_config = ConfigDict(extra="forbid")

    max_batch_rows: int = Field(8192, ge=1, description="A batch closes at this many rows.")
    max_queue_delay_us: int = Field(
        1000, ge=0, description="Longest the oldest queued request waits for a batch to fill."
    )
    queue_capacity_rows: int = Field(
        1_048_576,
        ge=1,
        description="Rows a version may hold queued (about a second of work on two CPU cores); "
        "beyond it requests get 503.",
    )
    request_timeout_s: float = Field(
        10.0, gt=0, description="A request still queued after this long is answered 503."
    )
    concurrent_runs: int = Field(
        1, ge=1, description="ONNX Runtime runs in flight at once per model version."
    )


class Settings(BaseSettings):
    """Everything ``recserve serve`` can be told. Environment: ``RECSERVE_<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="RECSERVE_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="HTTP port.")
    workers: int = Field(1, ge=1, description="uvicorn worker processes.")
    model_repository: Path = Field(Path("model_repo"), description="Model repository root.")
    poll_interval_s: float = Field(
        2.0, ge=0, description="Seconds between repository scans; 0 disables polling."
    )
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    provider: Provider = Field("auto", description="Execution provider: auto, cuda or cpu.")
    cuda_device_id: int = Field(0, ge=0, description="GPU used by the CUDA provider.")
    ort_intra_op_threads: int = Field(
        0,
        ge=0,
        description="ONNX Runtime intra-op threads per session; 0: one less than the cores each "
        "worker process gets (its event loop keeps one), at least 1.",
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for the repository API; unset -> that API answers 403."
    )
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (after gzip)."
    )
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM, time allowed for queued requests to finish."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    request_log: bool = Field(False, description="One JSON log line per request.")

    @model_validator(mode="after")
    def _choose_threads(self) -> Settings:
        if self.ort_intra_op_threads == 0:
            self.ort_intra_op_threads = auto_intra_op_threads(self.workers)
        return self


def available_cores() -> int:
    """CPU cores this process may use: its affinity mask, capped by a cgroup v2 CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def auto_intra_op_threads(workers: int, cores: int | None = None) -> int:
    """ONNX Runtime threads per session when not configured: the cores each worker process gets,
    less one for its event loop (which decodes, batches and encodes meanwhile), at least 1."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // workers - 1)
