"""The manifest of a version (``metadata.json``), typed: what the model is and how to feed it.

``kind``, ``signature`` and ``files`` (the sha256 of every other file of the version) are what
serving reads. What training records beside them (hyper-parameters, dataset, metrics with the
popularity baseline, parity error, training figures) travels as it is, as further keys.

Manifests written before the signature existed (format 1: ``n_user_rows``, ``n_item_rows``,
``model_sha256``, optional ``inputs``/``outputs`` lists) are read into this form: their signature is
the two-id one they were served with.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from modelrepo.errors import VersionError, describe
from modelrepo.layout import MANIFEST_FILE, MODEL_FILE, UNKNOWN_ROW
from modelrepo.signature import Signature, two_id_signature

FORMAT_VERSION = 2


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    format_version: int = FORMAT_VERSION
    kind: str
    signature: Signature
    unknown_row: int = UNKNOWN_ROW
    files: dict[str, str] = {}
    created_at: str | None = None

    @field_validator("unknown_row")
    @classmethod
    def _one_unknown_row(cls, value: int) -> int:
        if value != UNKNOWN_ROW:
            raise ValueError(f"the unknown row is row {UNKNOWN_ROW} in every table")
        return value

    def records(self) -> dict[str, Any]:
        """What training recorded beside the contract (metrics, dataset, hyper-parameters...)."""
        return dict(self.model_extra or {})

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            raw = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise VersionError(f"cannot read {MANIFEST_FILE}: {exc}") from None
        if not isinstance(raw, dict):
            raise VersionError(f"{MANIFEST_FILE} must hold a JSON object")
        if "signature" not in raw:
            raw = _upgrade_format_1(raw)
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise VersionError(f"{MANIFEST_FILE}: {describe(exc)}") from None


_FORMAT_1_INPUTS = {"user": "INT64", "item": "INT64"}
_FORMAT_1_OUTPUTS = {"score": "FP32"}
_FORMAT_1_ONLY = ("n_user_rows", "n_item_rows", "inputs", "outputs", "model_sha256", "vocabulary")


def _upgrade_format_1(raw: dict[str, Any]) -> dict[str, Any]:
    """A format-1 manifest as format 2, with the checks the format-1 reader made."""
    rows: dict[str, int] = {}
    for key in ("n_user_rows", "n_item_rows"):
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise VersionError(f"{MANIFEST_FILE}: '{key}' must be a positive integer")
        rows[key] = value
    for key, contract in (("inputs", _FORMAT_1_INPUTS), ("outputs", _FORMAT_1_OUTPUTS)):
        declared = raw.get(key)
        if declared is None:
            continue
        try:
            found = {spec["name"]: spec.get("datatype") for spec in declared}
        except (TypeError, KeyError, AttributeError):
            raise VersionError(f"{MANIFEST_FILE}: '{key}' must be a list of tensor specs") from None
        if found != contract:
            raise VersionError(
                f"{MANIFEST_FILE}: {key} {found} do not match the contract {contract}"
            )
    upgraded = {k: v for k, v in raw.items() if k not in _FORMAT_1_ONLY}
    upgraded["format_version"] = FORMAT_VERSION
    upgraded.setdefault("kind", "unknown")
    signature = two_id_signature(rows["n_user_rows"], rows["n_item_rows"])
    upgraded["signature"] = signature.model_dump(mode="json")
    digest = raw.get("model_sha256")
    upgraded["files"] = {MODEL_FILE: digest} if isinstance(digest, str) and digest else {}
    return upgraded
