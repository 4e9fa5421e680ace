"""Reading and writing a version directory: atomic publication under the next integer version (no
duplicate numbers, nothing half-written, even with concurrent publishers), and a read that checks
every file against the manifest and names what is wrong."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import re
from pathlib import Path

import pytest

import modelrepo.version
from modelrepo import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    Source,
    VersionError,
    Vocabulary,
    list_versions,
    read_version,
    two_id_signature,
    write_version,
)
from modelrepo.layout import ITEMS_FILE, USERS_FILE

USERS = ["alice", "bob"]
ITEMS = ["i1", "i2", "i3"]
MODEL = b"x" * 1000
FILES = sorted([MANIFEST_FILE, MODEL_FILE, USERS_FILE, ITEMS_FILE])
RECORDS = {"dataset": {"name": "random", "size": 0, "content_hash": ""}}


def _manifest(n_users: int = len(USERS), n_items: int = len(ITEMS)) -> Manifest:
    signature = two_id_signature(n_users + 1, n_items + 1)
    return Manifest.model_validate({"kind": "mlp", "signature": signature, **RECORDS})


def _vocabularies() -> dict[str, Vocabulary]:
    return {USERS_FILE: Vocabulary(USERS), ITEMS_FILE: Vocabulary(ITEMS)}


def _publish(repository: Path, name: str = "demo") -> modelrepo.PublishedVersion:
    return write_version(repository, name, _manifest(), MODEL, _vocabularies())


def _publish_many(repository: str, count: int, results: multiprocessing.Queue[int]) -> None:
    for _ in range(count):
        results.put(_publish(Path(repository)).version)


def test_first_version_is_one_and_next_increments(tmp_path: Path) -> None:
    first, second = _publish(tmp_path), _publish(tmp_path)
    assert (first.version, second.version) == (1, 2)
    assert second.path == tmp_path / "demo" / "2"
    assert sorted(p.name for p in second.path.iterdir()) == FILES
    assert list_versions(tmp_path / "demo") == (1, 2)


def test_read_version_returns_what_was_written(tmp_path: Path) -> None:
    published = write_version(
        tmp_path, "demo", _manifest(), MODEL, _vocabularies(), {"history.json": b"[]"}
    )
    stored = read_version(published.path)
    assert stored.path == published.path
    assert stored.manifest == published.manifest
    assert stored.manifest.records() == RECORDS
    assert stored.model == MODEL
    signature = stored.manifest.signature
    user, item = signature.one_from(Source.USER), signature.one_from(Source.ITEM)
    assert user is not None and item is not None
    assert stored.vocabulary(user).ids == USERS
    assert stored.vocabulary(item).ids == ITEMS
    assert (published.path / "history.json").read_bytes() == b"[]"
    # The manifest holds the sha256 of every other file of the version.
    assert stored.manifest.files == {
        name: hashlib.sha256((published.path / name).read_bytes()).hexdigest()
        for name in (MODEL_FILE, USERS_FILE, ITEMS_FILE, "history.json")
    }


@pytest.mark.parametrize("name", [MODEL_FILE, USERS_FILE, ITEMS_FILE])
def test_a_file_changed_after_publication_is_refused_by_name(tmp_path: Path, name: str) -> None:
    path = _publish(tmp_path).path / name
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(VersionError, match=f"{name} sha256 .* does not match {MANIFEST_FILE}"):
        read_version(path.parent)


@pytest.mark.parametrize("name", [MODEL_FILE, USERS_FILE, ITEMS_FILE, MANIFEST_FILE])
def test_a_missing_file_is_named(tmp_path: Path, name: str) -> None:
    path = _publish(tmp_path).path
    (path / name).unlink()
    with pytest.raises(VersionError, match=f"^{name} is missing$"):
        read_version(path)


def _rewrite_manifest(path: Path, manifest: Manifest) -> None:
    (path / MANIFEST_FILE).write_text(manifest.to_json())


def test_a_vocabulary_must_have_the_rows_the_signature_says(tmp_path: Path) -> None:
    published = _publish(tmp_path)
    wrong = published.manifest.model_copy(update={"signature": two_id_signature(3, 9)})
    _rewrite_manifest(published.path, wrong)
    expected = "items.txt has 3 ids (4 rows with the unknown row) but input 'item' of the signature"
    with pytest.raises(VersionError, match=re.escape(f"{expected} has 9 rows")):
        read_version(published.path)


def test_a_vocabulary_that_breaks_its_rules_is_named(tmp_path: Path) -> None:
    published = _publish(tmp_path)
    (published.path / USERS_FILE).write_text("alice\nalice\n")
    files = {**published.manifest.files, USERS_FILE: ""}  # no checksum to stop it first
    _rewrite_manifest(published.path, published.manifest.model_copy(update={"files": files}))
    with pytest.raises(VersionError, match=re.escape("users.txt: duplicate id 'alice'")):
        read_version(published.path)


def test_a_version_in_the_format_before_the_signature_is_read(tmp_path: Path) -> None:
    """What the publisher wrote before the manifest carried a signature still reads."""
    path = tmp_path / "demo" / "1"
    path.mkdir(parents=True)
    (path / MODEL_FILE).write_bytes(MODEL)
    (path / USERS_FILE).write_text("".join(f"{u}\n" for u in USERS))
    (path / ITEMS_FILE).write_text("".join(f"{i}\n" for i in ITEMS))
    metadata = {
        "kind": "mlp",
        "inputs": [{"name": n, "datatype": "INT64", "shape": [-1]} for n in ("user", "item")],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
        "n_user_rows": len(USERS) + 1,
        "n_item_rows": len(ITEMS) + 1,
        "unknown_row": 0,
        "model_sha256": hashlib.sha256(MODEL).hexdigest(),
        **RECORDS,
    }
    (path / MANIFEST_FILE).write_text(json.dumps(metadata))
    stored = read_version(path)
    assert stored.manifest.signature == two_id_signature(len(USERS) + 1, len(ITEMS) + 1)
    assert stored.manifest.records() == RECORDS
    assert stored.model == MODEL
    assert sorted(stored.vocabularies) == [ITEMS_FILE, USERS_FILE]
    (path / MODEL_FILE).write_bytes(MODEL[:-1])
    with pytest.raises(VersionError, match="sha256"):
        read_version(path)


def test_versions_continue_after_the_highest_and_ignore_other_names(tmp_path: Path) -> None:
    model_dir = tmp_path / "demo"
    for name in ("3", "10", "abc", ".hidden", ".staging-x1", "0", "-1", "01", "+4", "\uff11\uff12"):
        (model_dir / name).mkdir(parents=True)
    (model_dir / "10" / MODEL_FILE).write_bytes(b"x")
    (model_dir / "11").write_bytes(b"a stray file, not a version")
    assert list_versions(model_dir) == (3, 10)
    published = _publish(tmp_path)
    assert published.version == 12  # 11 is taken by the stray file, which is left alone
    assert (model_dir / "11").read_bytes() == b"a stray file, not a version"
    assert list_versions(model_dir) == (3, 10, 12)


def test_failed_write_publishes_nothing_and_leaves_no_staging(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(directory: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(modelrepo.version, "_fsync_tree", broken)
    with pytest.raises(OSError, match="disk full"):
        _publish(tmp_path)
    model_dir = tmp_path / "demo"
    assert list_versions(model_dir) == ()
    assert [p.name for p in model_dir.iterdir() if p.name.startswith(".staging")] == []


@pytest.mark.parametrize("name", ["Demo", "../evil", "", "a" * 65, ".hidden", "a/b"])
def test_invalid_model_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="model name"):
        _publish(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_the_vocabularies_must_be_those_the_signature_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="names the vocabularies"):
        write_version(tmp_path, "demo", _manifest(), MODEL, {USERS_FILE: Vocabulary(USERS)})


@pytest.mark.parametrize("name", [MANIFEST_FILE, MODEL_FILE, USERS_FILE, ".hidden", "a/b"])
def test_extra_files_may_not_take_a_contract_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="extra file name"):
        write_version(tmp_path, "demo", _manifest(), MODEL, _vocabularies(), {name: b"x"})


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
    assert list_versions(model_dir) == tuple(range(1, 41))
    for version in versions:
        path = model_dir / str(version)
        assert sorted(p.name for p in path.iterdir()) == FILES
        assert read_version(path).model == MODEL  # whole, and as its manifest says
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".staging")]
