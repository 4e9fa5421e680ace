"""Feature tables: published with a version, read back aligned with the id rows, and refused by
name (file and input) whenever they disagree with the signature."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrepo import (
    ITEM_FEATURES_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    USER_FEATURES_FILE,
    InputSpec,
    Manifest,
    OutputSpec,
    Role,
    Signature,
    Source,
    VersionError,
    Vocabulary,
    read_version,
    write_version,
)
from modelrepo.layout import ITEMS_FILE, USERS_FILE
from modelrepo.tables import table_bytes

USERS, ITEMS, GENRES = ["u1", "u2", "u3"], ["i1", "i2"], ["Comedy", "Drama", "War"]


def _spec(name: str, role: Role, source: Source, **fields: Any) -> InputSpec:
    dtype = "FP32" if role is Role.DENSE else "INT64"
    shape = (-1,) if role is Role.ID else (-1, fields.pop("width", 1))
    return InputSpec(name=name, role=role, source=source, dtype=dtype, shape=shape, **fields)


SIGNATURE = Signature(
    inputs=(
        _spec("user", Role.ID, Source.USER, n_rows=4, vocabulary=USERS_FILE),
        _spec("item", Role.ID, Source.ITEM, n_rows=3, vocabulary=ITEMS_FILE),
        _spec("user_age", Role.DENSE, Source.USER_TABLE, table=USER_FEATURES_FILE, feature="age",
              mean=(30.0,), std=(12.0,)),
        _spec("user_gender", Role.ID, Source.USER_TABLE, table=USER_FEATURES_FILE,
              feature="gender", n_rows=3, vocabulary="vocab_user_gender.txt"),
        _spec("item_genres", Role.MULTI_HOT, Source.ITEM_TABLE, table=ITEM_FEATURES_FILE,
              feature="genres", n_rows=4, width=2, vocabulary="vocab_item_genres.txt"),
    ),
    outputs=(OutputSpec(name="score", dtype="FP32", shape=(-1,)),),
    score="score",
)  # fmt: skip


def _tables() -> dict[str, dict[str, np.ndarray]]:
    return {
        USER_FEATURES_FILE: {
            "user_age": np.array([[0.0], [-0.5], [1.0], [0.25]], np.float32),
            "user_gender": np.array([0, 1, 2, 1], np.int64),
        },
        ITEM_FEATURES_FILE: {"item_genres": np.array([[0, 0], [1, 2], [3, 0]], np.int64)},
    }


def _publish(tmp_path: Path, tables: dict[str, dict[str, np.ndarray]]) -> Path:
    manifest = Manifest(kind="dlrm", signature=SIGNATURE)
    vocabularies = {
        USERS_FILE: Vocabulary(USERS),
        ITEMS_FILE: Vocabulary(ITEMS),
        "vocab_user_gender.txt": Vocabulary(["F", "M"]),
        "vocab_item_genres.txt": Vocabulary(GENRES),
    }
    return write_version(tmp_path, "m", manifest, b"onnx", vocabularies, tables=tables).path


def test_tables_round_trip_aligned_with_the_id_rows(tmp_path: Path) -> None:
    path = _publish(tmp_path, _tables())
    stored = read_version(path)
    for file, arrays in _tables().items():
        assert set(stored.tables[file]) == set(arrays)
        for name, expected in arrays.items():
            got = stored.tables[file][name]
            assert got.dtype == expected.dtype and np.array_equal(got, expected)
    assert {USER_FEATURES_FILE, ITEM_FEATURES_FILE, MODEL_FILE} <= set(stored.manifest.files)


# (file, input, its replacement, a phrase of the refusal)
BAD_TABLES: dict[str, tuple[str, str, Any, str]] = {
    "float categories": (
        USER_FEATURES_FILE, "user_gender", np.zeros(4, np.float32), "needs int64[4]"
    ),
    "a row short": (USER_FEATURES_FILE, "user_age", np.zeros((3, 1), np.float32), "float32[4, 1]"),
    "category out of range": (
        USER_FEATURES_FILE, "user_gender", np.array([0, 1, 3, 1], np.int64), "outside [0, 3)"
    ),
    "negative bag entry": (
        ITEM_FEATURES_FILE, "item_genres", np.array([[0, 0], [-1, 2], [3, 0]], np.int64),
        "outside [0, 4)",
    ),
    "bag of the wrong length": (
        ITEM_FEATURES_FILE, "item_genres", np.zeros((3, 3), np.int64), "int64[3, 2]"
    ),
    "not finite": (
        USER_FEATURES_FILE, "user_age", np.array([[0.0], [np.nan], [0], [0]], np.float32),
        "not finite",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_TABLES))
def test_a_table_that_disagrees_with_the_signature_is_not_published(
    tmp_path: Path, case: str
) -> None:
    file, name, value, phrase = BAD_TABLES[case]
    tables = _tables()
    tables[file][name] = value
    with pytest.raises(ValueError, match=re.escape(f"{file}: '{name}'") + ".*" + re.escape(phrase)):
        _publish(tmp_path, tables)
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_the_tables_must_be_those_the_signature_names(tmp_path: Path) -> None:
    tables = _tables()
    del tables[ITEM_FEATURES_FILE]
    with pytest.raises(ValueError, match="names the tables"):
        _publish(tmp_path, tables)
    tables = _tables()
    tables[USER_FEATURES_FILE]["user_zip"] = np.zeros(4, np.int64)
    with pytest.raises(ValueError, match="the signature looks up"):
        _publish(tmp_path, tables)


def _set_checksum(path: Path, file: str, digest: str | None) -> None:
    raw = json.loads((path / MANIFEST_FILE).read_text())
    if digest is None:
        del raw["files"][file]
    else:
        raw["files"][file] = digest
    (path / MANIFEST_FILE).write_text(json.dumps(raw))


def test_a_table_replaced_on_disk_with_its_manifest_is_still_checked(tmp_path: Path) -> None:
    """Even with a matching sha256 (rewritten by hand), a table that breaks the contract is
    refused when read, naming the file and the input."""
    path = _publish(tmp_path, _tables())
    bad = _tables()[USER_FEATURES_FILE]
    bad["user_gender"] = np.array([0, 9, 1, 1], np.int64)
    data = table_bytes(bad)
    (path / USER_FEATURES_FILE).write_bytes(data)
    _set_checksum(path, USER_FEATURES_FILE, hashlib.sha256(data).hexdigest())
    with pytest.raises(VersionError, match=r"user_features.npz: 'user_gender'.*outside \[0, 3\)"):
        read_version(path)


@pytest.mark.parametrize("kind", ["garbage", "a bare .npy array"])
def test_a_table_file_that_is_not_an_archive_is_named(tmp_path: Path, kind: str) -> None:
    path = _publish(tmp_path, _tables())
    data = b"not a zip"
    if kind != "garbage":
        buffer = io.BytesIO()
        np.save(buffer, np.zeros(3, np.int64))
        data = buffer.getvalue()
    (path / ITEM_FEATURES_FILE).write_bytes(data)
    _set_checksum(path, ITEM_FEATURES_FILE, None)  # no checksum: the parse itself must refuse it
    with pytest.raises(VersionError, match=r"cannot read item_features\.npz"):
        read_version(path)
