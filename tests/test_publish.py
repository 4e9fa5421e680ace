"""Atomic publication: next integer version, nothing half-written, no duplicate numbers."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest

from training.publish import existing_versions, publish_version


def _write_files(staging: Path) -> None:
    (staging / "model.onnx").write_bytes(b"x" * 1000)
    (staging / "metadata.json").write_text("{}")


def _publish_many(repository: str, count: int, results: multiprocessing.Queue[int]) -> None:
    for _ in range(count):

        def write(staging: Path) -> None:
            _write_files(staging)
            time.sleep(0.001)  # widen the window between staging and rename

        results.put(publish_version(Path(repository), "demo", write).version)


def test_first_version_is_one_and_next_increments(tmp_path: Path) -> None:
    first = publish_version(tmp_path, "demo", _write_files)
    second = publish_version(tmp_path, "demo", _write_files)
    assert (first.version, second.version) == (1, 2)
    assert sorted(p.name for p in second.path.iterdir()) == ["metadata.json", "model.onnx"]


def test_versions_continue_after_the_highest_and_ignore_other_names(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    for name in ("3", "10", "abc", ".hidden", "0", "-1"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "10" / "model.onnx").write_bytes(b"x")
    assert existing_versions(model_dir) == [3, 10]
    assert publish_version(tmp_path, "demo", _write_files).version == 11


def test_failed_write_publishes_nothing_and_leaves_no_staging(tmp_path: Path) -> None:
    def broken(staging: Path) -> None:
        (staging / "model.onnx").write_bytes(b"partial")
        raise RuntimeError("export failed")

    with pytest.raises(RuntimeError, match="export failed"):
        publish_version(tmp_path, "demo", broken)
    assert existing_versions(tmp_path / "demo") == []
    assert [p.name for p in (tmp_path / "demo").iterdir() if p.name.startswith(".staging")] == []


@pytest.mark.parametrize("name", ["Demo", "../evil", "", "a" * 65, ".hidden", "a/b"])
def test_invalid_model_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        publish_version(tmp_path, name, _write_files)


def test_concurrent_publishers_never_share_a_version(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = ctx.Queue()
    workers = [
        ctx.Process(target=_publish_many, args=(str(tmp_path), 10, results)) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    versions = sorted(results.get(timeout=5) for _ in range(40))
    assert versions == list(range(1, 41))
    model_dir = tmp_path / "demo"
    assert existing_versions(model_dir) == list(range(1, 41))
    for version in versions:
        files = sorted(p.name for p in (model_dir / str(version)).iterdir())
        assert files == ["metadata.json", "model.onnx"]
        assert (model_dir / str(version) / "model.onnx").stat().st_size == 1000
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".staging")]
