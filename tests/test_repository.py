"""Repository scanning: which directories are models and versions, and file stamps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.models.repository import parse_version, scan, stamp_version


def test_scan_keeps_valid_models_and_integer_versions(tmp_path: Path) -> None:
    for version in ("1", "2", "10", "0", "01", "-3", "v4", ".staging-abc", "٣"):
        (tmp_path / "ranker" / version).mkdir(parents=True)
    (tmp_path / "ranker" / "7").write_text("a file, not a version")
    (tmp_path / "ranker" / ".publish.lock").write_text("")
    for name in ("Bad", "_hidden", ".hidden", "x" * 65, "ok.v2-b_c"):
        (tmp_path / name / "1").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty").mkdir()

    found = scan(tmp_path)
    assert sorted(found) == ["empty", "ok.v2-b_c", "ranker"]
    assert found["ranker"].versions == (1, 2, 10)
    assert found["ranker"].path == tmp_path / "ranker"
    assert found["empty"].versions == ()


def test_parse_version() -> None:
    assert parse_version("12") == 12
    for name in ("0", "012", "+1", "1.0", "", " 1"):
        assert parse_version(name) is None


def test_scan_of_a_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        scan(tmp_path / "missing")


def test_stamp_changes_when_a_file_is_replaced(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    for name in ("model.onnx", "metadata.json", "users.txt", "items.txt"):
        (version / name).write_text("x")
    before = stamp_version(version)
    assert None not in before
    assert stamp_version(version) == before
    replacement = tmp_path / "new.onnx"
    replacement.write_text("y")
    os.replace(replacement, version / "model.onnx")
    assert stamp_version(version) != before
    (version / "items.txt").unlink()
    assert stamp_version(version)[3] is None
