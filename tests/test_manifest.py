"""The manifest (``metadata.json``): a typed round trip that keeps what training records beside the
contract, and manifests of the format before the signature read with the checks they had."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelrepo import FORMAT_VERSION, Manifest, VersionError, two_id_signature
from modelrepo.layout import MODEL_FILE

DIGEST = "ab" * 32
RECORDS = {
    "dataset": {"name": "movielens-1m", "size": 1_000_209, "content_hash": "cd" * 32},
    "metrics": {"hit_rate@10": 0.61, "popularity": {"hit_rate@10": 0.45}},
    "hyperparameters": {"embedding_dim": 32, "tower": [64, 32]},
}


def _format_1(**changes: Any) -> dict[str, Any]:
    """metadata.json as the publisher wrote it before the signature existed."""
    metadata: dict[str, Any] = {
        "kind": "mlp",
        "inputs": [{"name": n, "datatype": "INT64", "shape": [-1]} for n in ("user", "item")],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
        "n_user_rows": 51,
        "n_item_rows": 41,
        "unknown_row": 0,
        "model_sha256": DIGEST,
        "created_at": "2024-05-01T12:00:00Z",
        **RECORDS,
    }
    metadata.update(changes)
    return {k: v for k, v in metadata.items() if v is not None}


def test_round_trip_keeps_the_contract_and_every_record() -> None:
    manifest = Manifest.model_validate(
        {
            "kind": "mlp",
            "signature": two_id_signature(51, 41),
            "files": {MODEL_FILE: DIGEST},
            "created_at": "2024-05-01T12:00:00Z",
            **RECORDS,
        }
    )
    text = manifest.to_json()
    again = Manifest.from_json(text)
    assert again == manifest
    assert again.format_version == FORMAT_VERSION
    assert again.signature == two_id_signature(51, 41)
    assert again.unknown_row == 0
    assert again.records() == RECORDS
    assert json.loads(text)["dataset"] == RECORDS["dataset"]  # records stay top-level keys


def test_format_1_is_read_as_the_two_id_signature() -> None:
    manifest = Manifest.from_json(json.dumps(_format_1()))
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.kind == "mlp"
    assert manifest.signature == two_id_signature(51, 41)
    assert manifest.files == {MODEL_FILE: DIGEST}
    assert manifest.created_at == "2024-05-01T12:00:00Z"
    assert manifest.records() == RECORDS  # the format-1 contract keys are not records
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_format_1_without_checksum_kind_or_tensor_lists_is_read() -> None:
    raw = _format_1(kind=None, model_sha256=None, inputs=None, outputs=None, unknown_row=None)
    manifest = Manifest.from_json(json.dumps(raw))
    assert manifest.kind == "unknown"
    assert manifest.files == {}
    assert manifest.signature == two_id_signature(51, 41)


@pytest.mark.parametrize("key", ["n_user_rows", "n_item_rows"])
@pytest.mark.parametrize("value", [None, 0, -3, "51", 51.0, True])
def test_format_1_rows_must_be_positive_integers(key: str, value: object) -> None:
    with pytest.raises(VersionError, match=f"'{key}' must be a positive integer"):
        Manifest.from_json(json.dumps(_format_1(**{key: value})))


@pytest.mark.parametrize(
    ("key", "declared", "phrase"),
    [
        ("inputs", [{"name": "user", "datatype": "INT64"}], "do not match the contract"),
        (
            "inputs",
            [{"name": "user", "datatype": "INT64"}, {"name": "product", "datatype": "INT64"}],
            "do not match the contract",
        ),
        (
            "inputs",
            [{"name": "user", "datatype": "INT32"}, {"name": "item", "datatype": "INT64"}],
            "do not match the contract",
        ),
        ("outputs", [{"name": "probability", "datatype": "FP32"}], "do not match the contract"),
        ("outputs", [{"name": "score", "datatype": "FP64"}], "do not match the contract"),
        ("inputs", "user,item", "'inputs' must be a list of tensor specs"),
        ("outputs", [{"datatype": "FP32"}], "'outputs' must be a list of tensor specs"),
    ],
)
def test_format_1_tensor_lists_must_be_the_contract(key: str, declared: Any, phrase: str) -> None:
    with pytest.raises(VersionError, match=phrase):
        Manifest.from_json(json.dumps(_format_1(**{key: declared})))


@pytest.mark.parametrize("unknown_row", [1, -1, 7])
def test_the_unknown_row_is_row_0_only(unknown_row: int) -> None:
    for raw in (
        _format_1(unknown_row=unknown_row),
        {"kind": "mlp", "signature": two_id_signature(3, 3).model_dump(mode="json"),
         "unknown_row": unknown_row},
    ):  # fmt: skip
        with pytest.raises(VersionError, match=r"unknown_row: .*the unknown row is row 0"):
            Manifest.from_json(json.dumps(raw))


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        (b"{not json", "cannot read metadata.json"),
        (b"\xff\xfe", "cannot read metadata.json"),
        (b"[1, 2]", "must hold a JSON object"),
        (b'{"kind": "mlp", "signature": {"inputs": [], "outputs": [], "score": "s"}}', "signature"),
        (b'{"signature": {}}', "kind"),
    ],
)
def test_an_unreadable_manifest_is_a_version_error(text: bytes, phrase: str) -> None:
    with pytest.raises(VersionError, match=phrase):
        Manifest.from_json(text)


def test_manifest_is_frozen() -> None:
    manifest = Manifest(kind="mlp", signature=two_id_signature(3, 3))
    with pytest.raises(ValueError, match="frozen"):
        manifest.kind = "neumf"  # type: ignore[misc]
