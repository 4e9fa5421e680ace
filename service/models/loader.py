"""Loading one version directory: metadata, vocabularies, checksum, session, contract, warmup.

Runs in a worker thread. Every way a version can be unfit to serve raises
:class:`service.errors.ModelLoadError` with a reason meant for the repository index. A load can be
abandoned between its steps (the server is shutting down): it then raises :class:`LoadCancelled`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.errors import ModelLoadError
from service.models.config import EffectiveConfig
from service.models.repository import ITEMS_FILE, METADATA_FILE, MODEL_FILE, USERS_FILE
from service.models.vocab import UNKNOWN_ROW, Vocabulary
from service.runtime.session import (
    CONTRACT_INPUTS,
    CONTRACT_OUTPUTS,
    Runtime,
    TensorSpec,
    check_contract,
    choose_provider,
)

log = logging.getLogger(__name__)


class LoadCancelled(ModelLoadError):
    """The load was abandoned because the server is stopping; not a fault of the version."""


@dataclass(frozen=True)
class PreparedVersion:
    """A version that passed every check and is warmed up, not yet taking requests."""

    path: Path
    metadata: dict[str, Any]
    users: Vocabulary
    items: Vocabulary
    runtime: Runtime
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    load_seconds: float


def read_metadata(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"{METADATA_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {METADATA_FILE}: {exc}") from None
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{METADATA_FILE} must hold a JSON object")
    for key in ("n_user_rows", "n_item_rows"):
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelLoadError(f"{METADATA_FILE}: '{key}' must be a positive integer")
    if raw.get("unknown_row", UNKNOWN_ROW) != UNKNOWN_ROW:
        raise ModelLoadError(f"{METADATA_FILE}: 'unknown_row' must be {UNKNOWN_ROW}")
    _check_declared(raw, "inputs", CONTRACT_INPUTS)
    _check_declared(raw, "outputs", CONTRACT_OUTPUTS)
    return raw


def _check_declared(metadata: dict[str, Any], key: str, contract: dict[str, str]) -> None:
    """Tensors listed in the metadata, when listed, must be the contract's."""
    declared = metadata.get(key)
    if declared is None:
        return
    try:
        found = {spec["name"]: spec.get("datatype") for spec in declared}
    except (TypeError, KeyError, AttributeError):
        raise ModelLoadError(f"{METADATA_FILE}: '{key}' must be a list of tensor specs") from None
    if found != contract:
        raise ModelLoadError(f"{METADATA_FILE}: {key} {found} do not match the contract {contract}")


def _check_vocabulary(vocab: Vocabulary, metadata: dict[str, Any], key: str, file: str) -> None:
    if vocab.n_rows != metadata[key]:
        raise ModelLoadError(
            f"{file} has {len(vocab)} ids ({vocab.n_rows} rows with the unknown row) but "
            f"{METADATA_FILE} says {key}={metadata[key]}"
        )


def read_model(path: Path, expected_sha256: object) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(f"{MODEL_FILE} is missing") from None
    except OSError as exc:
        raise ModelLoadError(f"cannot read {MODEL_FILE}: {exc}") from None
    if isinstance(expected_sha256, str) and expected_sha256:
        digest = hashlib.sha256(data).hexdigest()
        if digest != expected_sha256.lower():
            raise ModelLoadError(
                f"{MODEL_FILE} sha256 {digest[:12]}… does not match {METADATA_FILE} "
                f"({expected_sha256[:12]}…): truncated, or replaced without its metadata"
            )
    return data


def prepare_version(
    path: Path,
    config: EffectiveConfig,
    *,
    device_id: int = 0,
    cancelled: Callable[[], bool] | None = None,
) -> PreparedVersion:
    """Read, check, load and warm up the version in ``path``.

    ``cancelled`` is asked between steps (and between warmup runs); once it answers True the load
    stops with :class:`LoadCancelled`.
    """
    stop = cancelled or _never

    def checkpoint() -> None:
        if stop():
            raise LoadCancelled("load abandoned: the server is shutting down")

    started = time.monotonic()
    checkpoint()
    metadata = read_metadata(path / METADATA_FILE)
    users = Vocabulary.from_file(path / USERS_FILE)
    items = Vocabulary.from_file(path / ITEMS_FILE)
    _check_vocabulary(users, metadata, "n_user_rows", USERS_FILE)
    _check_vocabulary(items, metadata, "n_item_rows", ITEMS_FILE)
    model = read_model(path / MODEL_FILE, metadata.get("model_sha256"))
    checkpoint()
    provider = choose_provider(config.provider, device_id).provider
    runtime = Runtime(
        model, provider=provider, device_id=device_id, intra_op_threads=config.intra_op_threads
    )
    if runtime.provider != provider:
        if config.provider == "cuda":
            raise ModelLoadError(
                f"provider 'cuda' configured but the session runs on {runtime.provider}"
            )
        log.warning("session asked for %s but runs on %s", provider, runtime.provider)
    check_contract(runtime.inputs, runtime.outputs)
    runtime.warmup(
        config.warmup_batch_sizes,
        {"user": users.n_rows, "item": items.n_rows},
        between=checkpoint,
        largest=config.batching.max_batch_rows if config.warmup_batch_sizes else 0,
    )
    outputs = tuple(spec for spec in runtime.outputs if spec.name in CONTRACT_OUTPUTS)
    return PreparedVersion(
        path=path,
        metadata=metadata,
        users=users,
        items=items,
        runtime=runtime,
        inputs=tuple(TensorSpec(s.name, s.datatype, (-1,)) for s in runtime.inputs),
        outputs=tuple(TensorSpec(s.name, s.datatype, (-1,)) for s in outputs),
        load_seconds=time.monotonic() - started,
    )


def _never() -> bool:
    return False
