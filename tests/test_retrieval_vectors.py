"""The retrieval vectors a version ships: round trip through bytes, every corrupt file refused
with the fault named, checked against the signature, published and read back with the version."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrepo import (
    RETRIEVAL_FILE,
    Manifest,
    RetrievalVectors,
    VersionError,
    Vocabulary,
    parse_retrieval,
    read_version,
    two_id_signature,
    write_version,
)
from modelrepo.layout import ITEMS_FILE, USERS_FILE

USERS, ITEMS, DIM = ("a", "b", "c"), ("v", "w", "x", "y", "z"), 4
N_USER_ROWS, N_ITEM_ROWS = len(USERS) + 1, len(ITEMS) + 1


def sample(dim: int = DIM) -> RetrievalVectors:
    rng = np.random.default_rng(3)
    return RetrievalVectors(
        rng.normal(size=(N_USER_ROWS, dim)).astype(np.float32),
        rng.normal(size=(N_ITEM_ROWS, dim)).astype(np.float32),
    )


def archive_of(arrays: dict[str, np.ndarray | None]) -> bytes:
    """An ``.npz`` of the sample's arrays with ``arrays`` replacing them (None drops one)."""
    base = sample()
    merged = {"user_vectors": base.user_vectors, "item_vectors": base.item_vectors, **arrays}
    kept: dict[str, Any] = {key: value for key, value in merged.items() if value is not None}
    buffer = io.BytesIO()
    np.savez(buffer, **kept)
    return buffer.getvalue()


def test_round_trip_through_bytes() -> None:
    vectors = sample()
    back = RetrievalVectors.from_bytes(vectors.to_bytes(), N_USER_ROWS, N_ITEM_ROWS)
    assert back.user_vectors.dtype == back.item_vectors.dtype == np.float32
    np.testing.assert_array_equal(back.user_vectors, vectors.user_vectors)
    np.testing.assert_array_equal(back.item_vectors, vectors.item_vectors)
    assert (back.dim, back.n_user_rows, back.n_item_rows) == (DIM, N_USER_ROWS, N_ITEM_ROWS)


NAN_ITEMS = np.full((N_ITEM_ROWS, DIM), np.nan, np.float32)
INF_USERS = np.full((N_USER_ROWS, DIM), np.inf, np.float32)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"user_vectors": None}, r"holds \['item_vectors'\]; expected"),
        ({"bias": np.zeros(2, np.float32)}, r"holds \['bias', 'item_vectors', 'user_vectors'\]"),
        ({"item_vectors": np.zeros((N_ITEM_ROWS, DIM))}, "'item_vectors' is float64"),
        ({"user_vectors": np.zeros(N_USER_ROWS, np.float32)}, r"'user_vectors' is float32\[4\]"),
        ({"item_vectors": np.zeros((N_ITEM_ROWS, DIM, 1), np.float32)}, "a float32 matrix"),
        ({"user_vectors": np.zeros((5, DIM), np.float32)}, "has 5 rows, the user ids have 4"),
        ({"item_vectors": np.zeros((3, DIM), np.float32)}, "has 3 rows, the item ids have 6"),
        ({"item_vectors": np.zeros((N_ITEM_ROWS, 0), np.float32)}, "'item_vectors' has no columns"),
        ({"item_vectors": NAN_ITEMS}, "'item_vectors' holds values that are not finite"),
        ({"user_vectors": INF_USERS}, "'user_vectors' holds values that are not finite"),
        ({"item_vectors": sample(DIM + 1).item_vectors}, "4 columns but item vectors 5"),
        ({"user_vectors": np.array([["x"] * DIM] * N_USER_ROWS, dtype=object)}, "cannot read"),
    ],
)
def test_a_corrupt_file_is_refused_naming_the_fault(
    arrays: dict[str, np.ndarray | None], message: str
) -> None:
    with pytest.raises(VersionError, match=message):
        RetrievalVectors.from_bytes(archive_of(arrays), N_USER_ROWS, N_ITEM_ROWS)


@pytest.mark.parametrize(
    "data", [b"garbage", sample().to_bytes()[:50], b""], ids=["garbage", "truncated", "empty"]
)
def test_an_unreadable_file_is_refused(data: bytes) -> None:
    with pytest.raises(VersionError, match=r"cannot read retrieval\.npz"):
        RetrievalVectors.from_bytes(data, N_USER_ROWS, N_ITEM_ROWS)


def test_a_bare_array_is_not_an_archive() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((N_ITEM_ROWS, DIM), np.float32))
    with pytest.raises(VersionError, match=r"not an \.npz archive"):
        RetrievalVectors.from_bytes(buffer.getvalue(), N_USER_ROWS, N_ITEM_ROWS)


def test_the_vectors_must_fit_the_signature() -> None:
    data = sample().to_bytes()
    assert parse_retrieval(data, two_id_signature(N_USER_ROWS, N_ITEM_ROWS)).dim == DIM
    with pytest.raises(VersionError, match="'user_vectors' has 4 rows, the user ids have 9"):
        parse_retrieval(data, two_id_signature(9, N_ITEM_ROWS))
    with pytest.raises(VersionError, match="'item_vectors' has 6 rows, the item ids have 2"):
        parse_retrieval(data, two_id_signature(N_USER_ROWS, 2))
    full = two_id_signature(N_USER_ROWS, N_ITEM_ROWS)
    no_user = full.model_copy(update={"inputs": full.inputs[1:]})
    with pytest.raises(VersionError, match="signature takes no user and item ids"):
        parse_retrieval(data, no_user)


def publish(repository: Path, retrieval: RetrievalVectors | None) -> Path:
    signature = two_id_signature(N_USER_ROWS, N_ITEM_ROWS)
    published = write_version(
        repository,
        "m",
        Manifest(kind="mlp", signature=signature),
        b"not a graph",
        {USERS_FILE: Vocabulary(list(USERS)), ITEMS_FILE: Vocabulary(list(ITEMS))},
        retrieval=retrieval,
    )
    return published.path


def test_a_version_reads_its_vectors_back(tmp_path: Path) -> None:
    vectors = sample()
    path = publish(tmp_path, vectors)
    assert RETRIEVAL_FILE in json.loads((path / "metadata.json").read_text())["files"]
    stored = read_version(path)
    assert stored.retrieval is not None
    np.testing.assert_array_equal(stored.retrieval.item_vectors, vectors.item_vectors)
    np.testing.assert_array_equal(stored.retrieval.user_vectors, vectors.user_vectors)
    assert read_version(publish(tmp_path, None)).retrieval is None  # optional


def test_publishing_vectors_that_do_not_fit_is_refused(tmp_path: Path) -> None:
    short = RetrievalVectors(sample().user_vectors[:2], sample().item_vectors)
    with pytest.raises(ValueError, match="'user_vectors' has 2 rows, the user ids have 4"):
        publish(tmp_path, short)
    halves = RetrievalVectors(sample().user_vectors.astype(np.float16), sample().item_vectors)
    with pytest.raises(ValueError, match="'user_vectors' is float16"):
        publish(tmp_path, halves)
    assert not (tmp_path / "m" / "1").exists()


def test_corrupt_vectors_stop_the_version_from_loading(tmp_path: Path) -> None:
    path = publish(tmp_path, sample())
    # Replaced with its digest: the checksum passes, the checks do not.
    bad = archive_of({"item_vectors": NAN_ITEMS})
    (path / RETRIEVAL_FILE).write_bytes(bad)
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["files"][RETRIEVAL_FILE] = hashlib.sha256(bad).hexdigest()
    (path / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(VersionError, match="not finite"):
        read_version(path)
    (path / RETRIEVAL_FILE).unlink()
    with pytest.raises(VersionError, match=r"retrieval\.npz is missing"):
        read_version(path)
