"""The users' training histories a version ships: CSR built from pairs, round-trip through bytes,
every corrupt file refused with the fault named, and read back with the version."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrepo import (
    HISTORY_FILE,
    History,
    Manifest,
    VersionError,
    Vocabulary,
    parse_history,
    read_version,
    two_id_signature,
    write_version,
)
from modelrepo.layout import ITEMS_FILE, USERS_FILE

N_USER_ROWS, N_ITEM_ROWS = 4, 6  # 3 users and 5 items, plus the unknown row of each
MODEL = b"not really onnx"


def sample() -> History:
    # User 1 has items 5, 2, 2 (a repeat), user 3 has item 1; user 2 has none.
    return History.from_pairs(
        np.array([1, 3, 1, 1]), np.array([5, 1, 2, 2]), N_USER_ROWS, N_ITEM_ROWS
    )


def npz(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def valid_arrays() -> dict[str, Any]:
    """The arrays of :func:`sample`, as its file holds them."""
    return {
        "indptr": np.array([0, 0, 2, 2, 3], np.int64),
        "indices": np.array([2, 5, 1], np.int64),
        "n_item_rows": np.int64(N_ITEM_ROWS),
    }


def test_pairs_become_sorted_distinct_rows_per_user() -> None:
    history = sample()
    assert history.indptr.tolist() == [0, 0, 2, 2, 3]
    assert history.indices.tolist() == [2, 5, 1]
    assert (history.n_user_rows, history.n_item_rows, len(history)) == (4, 6, 3)
    assert history.items_of(1).tolist() == [2, 5]
    assert history.items_of(2).tolist() == []
    assert history.items_of(3).tolist() == [1]
    assert history.items_of(0).tolist() == []  # the unknown user has no history
    empty = History.from_pairs(np.empty(0), np.empty(0), 3, 2)
    assert empty.indptr.tolist() == [0, 0, 0, 0] and len(empty) == 0


@pytest.mark.parametrize(
    ("users", "items", "message"),
    [
        ([0], [1], r"user rows must lie in \[1, 4\)"),
        ([4], [1], r"user rows must lie in \[1, 4\)"),
        ([1], [0], r"item rows must lie in \[1, 6\)"),
        ([1], [6], r"item rows must lie in \[1, 6\)"),
        ([1, 2], [1], "2 user rows but 1 item rows"),
    ],
)
def test_pairs_outside_the_tables_are_refused(
    users: list[int], items: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        History.from_pairs(np.array(users), np.array(items), N_USER_ROWS, N_ITEM_ROWS)


def test_round_trip_through_bytes() -> None:
    history = sample()
    data = history.to_bytes()
    assert data[:2] == b"PK"  # an .npz: a zip archive
    back = History.parse(data)
    assert back.indptr.dtype == back.indices.dtype == np.int64
    assert back.indptr.tolist() == history.indptr.tolist()
    assert back.indices.tolist() == history.indices.tolist()
    assert back.n_item_rows == history.n_item_rows
    assert back.items_of(1).tolist() == [2, 5]
    assert History.parse(npz(**valid_arrays())).indices.tolist() == [2, 5, 1]


def corrupt(**changes: Any) -> bytes:
    """The sample's file with arrays replaced (a value of None removes the array)."""
    arrays = {**valid_arrays(), **changes}
    return npz(**{name: value for name, value in arrays.items() if value is not None})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not an archive at all", "cannot read history.npz"),
        (sample().to_bytes()[:40], "cannot read history.npz"),  # truncated
        (corrupt(indptr=None), r"holds \['indices', 'n_item_rows'\]"),
        (corrupt(extra=np.zeros(1)), r"holds \['extra', 'indices', 'indptr', 'n_item_rows'\]"),
        (corrupt(indptr=np.array([0, 0, 2, 2, 3], np.int32)), "'indptr' is int32"),
        (corrupt(indices=np.array([[2, 5, 1]], np.int64)), r"'indices' is int64\[1, 3\]"),
        (corrupt(n_item_rows=np.array([6], np.int64)), "'n_item_rows' is int64.1.*scalar"),
        (corrupt(indices=np.array(["a"], dtype=object)), "cannot read history.npz"),
        (corrupt(indptr=np.array([0], np.int64)), "'indptr' needs at least 2 entries"),
        (corrupt(indptr=np.array([1, 1, 2, 2, 3], np.int64)), "runs from 1 to 3"),
        (corrupt(indptr=np.array([0, 0, 2, 2, 2], np.int64)), "3 indices, runs from 0 to 2"),
        (corrupt(indptr=np.array([0, 0, 3, 2, 3], np.int64)), "'indptr' decreases"),
        (corrupt(indptr=np.array([0, 1, 2, 2, 3], np.int64)), r"unknown user \(row 0\) has items"),
        (corrupt(n_item_rows=np.int64(0)), "'n_item_rows' is 0"),
        (corrupt(indices=np.array([0, 5, 1], np.int64)), r"item rows outside \[1, 6\)"),
        (corrupt(indices=np.array([2, 6, 1], np.int64)), r"item rows outside \[1, 6\)"),
        (corrupt(indices=np.array([5, 2, 1], np.int64)), "user row 1 are not ascending"),
        (corrupt(indices=np.array([2, 2, 1], np.int64)), "user row 1 are not ascending"),
    ],
)
def test_a_corrupt_file_is_refused_naming_the_fault(data: bytes, message: str) -> None:
    with pytest.raises(VersionError, match=message):
        History.parse(data)


def test_a_bare_array_file_is_not_an_archive() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(3))
    with pytest.raises(VersionError, match=r"history\.npz: not an \.npz archive"):
        History.parse(buffer.getvalue())


def test_user_boundaries_are_not_ordering_faults() -> None:
    # User 1 ends on item 5 and user 2 starts on item 1: descending across users is fine.
    data = corrupt(
        indptr=np.array([0, 0, 2, 3, 3], np.int64), indices=np.array([2, 5, 1], np.int64)
    )
    assert History.parse(data).items_of(2).tolist() == [1]
    late = corrupt(  # the fault is reported for the user that holds it
        indptr=np.array([0, 0, 1, 3, 3], np.int64), indices=np.array([2, 5, 5], np.int64)
    )
    with pytest.raises(VersionError, match="user row 2 are not ascending"):
        History.parse(late)


def test_the_history_must_fit_the_signature() -> None:
    data = sample().to_bytes()
    assert len(parse_history(data, two_id_signature(N_USER_ROWS, N_ITEM_ROWS))) == 3
    with pytest.raises(VersionError, match=r"covers 4 user rows but input 'user' .* has 5"):
        parse_history(data, two_id_signature(5, N_ITEM_ROWS))
    with pytest.raises(VersionError, match=r"covers 6 item rows but input 'item' .* has 7"):
        parse_history(data, two_id_signature(N_USER_ROWS, 7))
    both = two_id_signature(N_USER_ROWS, N_ITEM_ROWS)
    items_only = both.model_copy(update={"inputs": both.inputs[1:]})
    with pytest.raises(VersionError, match="signature takes no user and item ids"):
        parse_history(data, items_only)


def publish(repository: Path, extra_files: dict[str, bytes] | None = None) -> Path:
    manifest = Manifest(kind="mlp", signature=two_id_signature(N_USER_ROWS, N_ITEM_ROWS))
    vocabularies = {
        USERS_FILE: Vocabulary(["a", "b", "c"]),
        ITEMS_FILE: Vocabulary(["v", "w", "x", "y", "z"]),
    }
    return write_version(repository, "m", manifest, MODEL, vocabularies, extra_files).path


def test_a_version_reads_its_history_back(tmp_path: Path) -> None:
    stored = read_version(publish(tmp_path, {HISTORY_FILE: sample().to_bytes()}))
    assert stored.history is not None
    assert stored.history.items_of(1).tolist() == [2, 5]
    assert read_version(publish(tmp_path)).history is None  # optional: served as before


def test_publishing_a_history_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    wrong = History.from_pairs(np.array([1]), np.array([1]), N_USER_ROWS + 1, N_ITEM_ROWS)
    with pytest.raises(ValueError, match="covers 5 user rows"):
        publish(tmp_path, {HISTORY_FILE: wrong.to_bytes()})
    with pytest.raises(ValueError, match=r"cannot read history\.npz"):
        publish(tmp_path, {HISTORY_FILE: b"garbage"})
    assert not (tmp_path / "m" / "1").exists()


def test_a_corrupt_history_stops_the_version_from_loading(tmp_path: Path) -> None:
    version = publish(tmp_path, {HISTORY_FILE: sample().to_bytes()})
    # Replaced together with its digest in the manifest: the checksum passes, the checks do not.
    bad = corrupt(indices=np.array([5, 2, 1], np.int64))
    (version / HISTORY_FILE).write_bytes(bad)
    metadata = json.loads((version / "metadata.json").read_text())
    metadata["files"][HISTORY_FILE] = hashlib.sha256(bad).hexdigest()
    (version / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises(VersionError, match="user row 1 are not ascending"):
        read_version(version)
    (version / HISTORY_FILE).unlink()
    with pytest.raises(VersionError, match=r"history\.npz is missing"):
        read_version(version)
