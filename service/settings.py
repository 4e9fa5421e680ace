"""Server settings: one pydantic object, read from ``RECSERVE_*`` environment variables and flags.

Nothing here is built at import time; ``Settings()`` is constructed by the CLI (or a test) and
handed to ``create_app``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.cores import usable_cores
from service.runtime.provider import CUDA, Provider, choose_provider


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
    workers: int = Field(
        0,
        ge=0,
        description="Worker processes, each with every model loaded; 0: one per usable core "
        "(affinity mask and cgroup CPU quota) with the CPU provider, 1 with CUDA.",
    )
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
    # The HTTP edge (service.http.protocol): what one connection may cost before it is refused.
    http_parser: Literal["auto", "httptools", "h11"] = Field(
        "auto", description="HTTP/1.1 parser: httptools when installed (auto), or h11."
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request head (request line and header fields); beyond it 431 "
        "(414 when the request line alone is longer) and the connection is closed.",
    )
    max_header_count: int = Field(
        100, ge=1, description="Most header fields in one request; beyond it 431."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Time to receive a request's head from its first byte (or from the "
        "connection's opening); beyond it 408 and the connection is closed (without an answer if "
        "nothing was sent).",
    )
    body_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Time to receive a request's body once its head is in; beyond it 408 and the "
        "connection is closed.",
    )
    keep_alive_timeout_s: float = Field(
        5.0, gt=0, description="An idle keep-alive connection is closed after this long."
    )
    max_connections: int = Field(
        1000,
        ge=1,
        description="Open connections per worker; beyond them requests get 503 with Retry-After "
        "(health probes are still answered).",
    )

    # Why ``workers`` has its value, for the start-up log (see workers_reason). A worker process
    # rebuilds its settings from RECSERVE_WORKERS=<the chosen count> and so reads "set by ...".
    _workers_reason: str = PrivateAttr("")

    @model_validator(mode="after")
    def _choose_from_the_machine(self) -> Settings:
        if self.workers == 0:
            self.workers, why = default_workers(self.provider, self.cuda_device_id)
        else:
            why = "set by --workers or RECSERVE_WORKERS"
        self._workers_reason = f"{self.workers} worker{'s' * (self.workers > 1)}: {why}"
        if self.ort_intra_op_threads == 0:
            self.ort_intra_op_threads = auto_intra_op_threads(self.workers)
        return self

    @property
    def workers_reason(self) -> str:
        """E.g. "2 workers: 2 usable cores, CPU provider", logged as the server starts."""
        return self._workers_reason


def default_workers(provider: Provider, cuda_device_id: int = 0) -> tuple[int, str]:
    """Worker processes when not configured, and why: one per usable core on the CPU, where
    each worker runs its own event loop and ONNX Runtime sessions in parallel; 1 on CUDA, where
    each further worker would hold its own CUDA context and copy of every model on one GPU."""
    if provider == "cuda":
        return 1, "CUDA provider"
    if provider == "auto" and _gpu_chosen(cuda_device_id):
        return 1, "CUDA provider (auto: a GPU is present)"
    cores = usable_cores()
    return cores, f"{cores} usable core{'s' * (cores > 1)}, CPU provider"


def _gpu_chosen(cuda_device_id: int) -> bool:
    """Whether provider ``auto`` runs on CUDA here (the driver is asked once per process)."""
    return choose_provider("auto", cuda_device_id).provider == CUDA


def auto_intra_op_threads(workers: int, cores: int | None = None) -> int:
    """ONNX Runtime threads per session when not configured: the cores each worker process gets,
    less one for its event loop (which decodes, batches and encodes meanwhile), at least 1.
    With the default of one worker per core that is 1: the session runs on the calling thread."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores // workers - 1)


def _shown_default_workers() -> str:
    cores = usable_cores()
    return f"0, which is {cores} here with the CPU provider"


# How ``recserve serve --help`` shows the defaults that are chosen from the machine.
MACHINE_DEFAULTS: dict[str, Callable[[], str]] = {"workers": _shown_default_workers}
