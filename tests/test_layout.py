"""The repository layout: which directories are models and versions, and file stamps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from modelrepo import list_versions, parse_version, scan, stamp_file, stamp_version


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
    assert list_versions(tmp_path / "ranker") == (1, 2, 10)


def test_parse_version() -> None:
    assert parse_version("12") == 12
    for name in ("0", "012", "+1", "1.0", "", " 1", "٣", "9" * 19):
        assert parse_version(name) is None


def test_scan_of_a_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        scan(tmp_path / "missing")


def test_stamp_changes_when_a_file_is_replaced_added_or_removed(tmp_path: Path) -> None:
    version = tmp_path / "1"
    version.mkdir()
    for name in ("model.onnx", "metadata.json", "users.txt", "items.txt"):
        (version / name).write_text("x")
    before = stamp_version(version)
    assert [stamp[0] for stamp in before] == sorted(p.name for p in version.iterdir())
    assert stamp_version(version) == before
    replacement = tmp_path / "new.onnx"
    replacement.write_text("y")
    os.replace(replacement, version / "model.onnx")
    replaced = stamp_version(version)
    assert replaced != before
    (version / "items.txt").unlink()
    assert "items.txt" not in [stamp[0] for stamp in stamp_version(version)]
    (version / "history.json").write_text("{}")
    assert "history.json" in [stamp[0] for stamp in stamp_version(version)]
    assert stamp_version(tmp_path / "missing") == ()


def test_stamp_of_one_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    assert stamp_file(path) is None
    path.write_text("{}")
    stamp = stamp_file(path)
    assert stamp is not None and stamp[:2] == ("config.json", 2)
