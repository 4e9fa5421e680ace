"""A model's optional ``config.json``: version policy, batching overrides, execution, warmup,
retrieval (two-stage recommend).

The version policy has Triton's shapes: ``{"latest": {"num_versions": N}}`` (default N=1),
``{"all": {}}`` or ``{"specific": {"versions": [...]}}``. Unknown keys are refused, so a misspelt
setting fails the model's load with a reason instead of being ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelrepo import CONFIG_FILE
from service.errors import ModelLoadError, describe_problems
from service.runtime.provider import Provider
from service.settings import BatchingSettings, Settings

DEFAULT_WARMUP_BATCH_SIZES = (1, 64, 1024)


def _positive(value: int) -> int:
    if value < 1:
        raise ValueError("must be a positive integer")
    return value


Positive = Annotated[int, AfterValidator(_positive)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LatestPolicy(_Strict):
    num_versions: int = Field(1, ge=1)


class AllPolicy(_Strict):
    pass


class SpecificPolicy(_Strict):
    versions: tuple[Positive, ...] = Field(min_length=1)


class VersionPolicy(_Strict):
    """Exactly one of ``latest``, ``all``, ``specific``; none given means ``latest`` 1."""

    latest: LatestPolicy | None = None
    all: AllPolicy | None = None
    specific: SpecificPolicy | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> VersionPolicy:
        given = [k for k in ("latest", "all", "specific") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one version policy, not {' and '.join(given)}")
        return self

    def candidates(self, present: list[int]) -> tuple[list[int], int | None]:
        """Versions to try, best first, and how many of them to serve (None: every one that loads).

        ``latest`` N serves the N highest versions that load, so a broken newest version leaves
        the previous one serving.
        """
        newest_first = sorted(present, reverse=True)
        if self.all is not None:
            return newest_first, None
        if self.specific is not None:
            wanted = set(self.specific.versions)
            return [v for v in newest_first if v in wanted], None
        latest = self.latest or LatestPolicy()
        return newest_first, latest.num_versions

    def to_triton(self) -> dict[str, Any]:
        if self.all is not None:
            return {"all": {}}
        if self.specific is not None:
            return {"specific": {"versions": list(self.specific.versions)}}
        return {"latest": {"num_versions": (self.latest or LatestPolicy()).num_versions}}


class BatchingOverrides(_Strict):
    """Fields of :class:`service.settings.BatchingSettings`; unset ones keep the server's."""

    max_batch_rows: int | None = Field(None, ge=1)
    max_queue_delay_us: int | None = Field(None, ge=0)
    queue_capacity_rows: int | None = Field(None, ge=1)
    request_timeout_s: float | None = Field(None, gt=0)
    concurrent_runs: int | None = Field(None, ge=1)


class ExecutionConfig(_Strict):
    provider: Provider | None = None
    intra_op_threads: int | None = Field(None, ge=0)


class WarmupConfig(_Strict):
    """Batch sizes run once at load, before the version takes requests; empty disables warmup."""

    batch_sizes: tuple[Positive, ...] = DEFAULT_WARMUP_BATCH_SIZES


class RetrievalConfig(_Strict):
    """Two-stage recommend (for versions that ship retrieval vectors): how many candidates the
    retrieval index returns, which index is built, and when two-stage is the default mode."""

    retrieve_n: int = Field(200, ge=1, description="candidates retrieved when a request names none")
    max_retrieve_n: int = Field(2000, ge=1, description="the most a request may ask for")
    two_stage_above_items: int = Field(
        20_000, ge=0, description="auto mode: two-stage above this many items, exhaustive below"
    )
    ann_above_items: int = Field(
        50_000, ge=0, description="an approximate (IVF) index above this many items, else exact"
    )
    ann_lists: int = Field(0, ge=0, description="IVF cells; 0: about sqrt(items)")
    ann_probes: int = Field(32, ge=1, description="IVF cells scanned per query: recall vs time")

    @model_validator(mode="after")
    def _bounded(self) -> RetrievalConfig:
        if self.retrieve_n > self.max_retrieve_n:
            raise ValueError(
                f"retrieve_n {self.retrieve_n} is above max_retrieve_n {self.max_retrieve_n}"
            )
        return self


class ModelConfig(_Strict):
    """The contents of ``<model>/config.json``; every field is optional."""

    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    batching: BatchingOverrides = Field(default_factory=BatchingOverrides)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)


@dataclass(frozen=True)
class EffectiveConfig:
    """A model's config.json merged over the server's settings: what a version is served with."""

    version_policy: VersionPolicy
    batching: BatchingSettings
    provider: Provider
    intra_op_threads: int
    warmup_batch_sizes: tuple[int, ...]
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version_policy": self.version_policy.to_triton(),
            "batching": self.batching.model_dump(),
            "execution": {"provider": self.provider, "intra_op_threads": self.intra_op_threads},
            "warmup": {"batch_sizes": list(self.warmup_batch_sizes)},
            "retrieval": self.retrieval.model_dump(),
        }


def resolve(config: ModelConfig, settings: Settings) -> EffectiveConfig:
    overrides = config.batching.model_dump(exclude_none=True)
    batching = settings.batching.model_copy(update=overrides)
    threads = config.execution.intra_op_threads
    return EffectiveConfig(
        version_policy=config.version_policy,
        batching=batching,
        provider=config.execution.provider or settings.provider,
        intra_op_threads=settings.ort_intra_op_threads if threads is None else threads,
        warmup_batch_sizes=config.warmup.batch_sizes,
        retrieval=config.retrieval,
    )


def parse_model_config(text: str) -> ModelConfig:
    """Parse config.json text; raises :class:`ModelLoadError` with a readable reason."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"invalid {CONFIG_FILE}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"invalid {CONFIG_FILE}: expected a JSON object")
    try:
        return ModelConfig.model_validate(raw)
    except ValidationError as exc:
        problems = describe_problems(exc.errors(), whole="<root>")
        raise ModelLoadError(f"invalid {CONFIG_FILE}: {problems}") from None


def load_model_config(model_dir: Path) -> ModelConfig:
    """The model's config.json, or the defaults when it has none."""
    path = model_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ModelConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read {CONFIG_FILE}: {exc}") from None
    return parse_model_config(text)
