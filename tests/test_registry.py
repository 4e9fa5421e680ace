"""The registry handlers read: lookups by name and version, the repository index, readiness."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from modelrepo import Source
from service.errors import ModelNotFound, ModelNotReady
from service.models.registry import IndexEntry
from service.runtime.provider import probe_gpu
from tests.factories import publish_random_version
from tests.model_tools import rows_of, run, serving


def test_serves_the_latest_version_and_lists_every_one(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "ranker", seed=1)
    publish_random_version(tmp_path, "ranker", seed=2, n_users=30, n_items=70)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, metrics):
            registry = reconciler.registry
            assert registry.ready
            served = registry.get("ranker")
            assert served.version == 2 and registry.get("ranker", 2) is served
            assert served.name == "ranker" and served.path == tmp_path / "ranker" / "2"
            assert registry.versions("ranker") == [2]
            assert registry.index() == [
                IndexEntry("ranker", "1", "UNAVAILABLE", "not served under the version policy"),
                IndexEntry("ranker", "2", "READY", ""),
            ]
            assert rows_of(served, Source.USER) == 31 and rows_of(served, Source.ITEM) == 71
            assert served.manifest.kind == "mlp"
            assert served.manifest.records()["dataset"]["name"] == "random"
            labels = {"model": "ranker", "version": "2"}
            assert metrics.registry.get_sample_value("recserve_model_loaded", labels) == 1
            assert (
                metrics.registry.get_sample_value(
                    "recserve_model_load_duration_seconds_count", {"model": "ranker"}
                )
                == 1
            )
        assert not registry.ready

    run(main())


def test_hidden_and_invalid_names_are_ignored(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "good")
    for junk in ("good/.staging-x1", "good/0", "good/01", "good/latest", "Bad/1", ".hidden/1"):
        (tmp_path / junk).mkdir(parents=True)
    (tmp_path / "good" / "5").write_text("not a directory")
    (tmp_path / "README.md").write_text("# notes")

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            assert registry.index() == [IndexEntry("good", "1", "READY", "")]
            with pytest.raises(ModelNotFound):
                registry.get("Bad")
            with pytest.raises(ModelNotFound):
                registry.get("good", 5)

    run(main())


def test_lookup_errors(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m")
    (tmp_path / "empty").mkdir()

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            with pytest.raises(ModelNotFound, match="unknown model 'nope'"):
                registry.get("nope")
            with pytest.raises(ModelNotFound):
                registry.versions("nope")
            with pytest.raises(ModelNotFound, match="has no version 9"):
                registry.get("m", 9)
            with pytest.raises(ModelNotReady, match="'empty' has no version ready"):
                registry.get("empty")
            assert registry.index()[0] == IndexEntry("empty", "", "UNAVAILABLE", "no versions")

    run(main())


def test_provider_is_chosen_once_and_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    publish_random_version(tmp_path, "a")
    publish_random_version(tmp_path, "b")

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            assert registry.get("a").provider == registry.provider
            if not probe_gpu()[0]:
                assert registry.provider == "CPUExecutionProvider"

    with caplog.at_level(logging.INFO, logger="service.models.reconciler"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "execution provider" in r.getMessage()]
    assert len(lines) == 1
    captured = capfd.readouterr()
    assert "CUDA" not in captured.err + captured.out


def test_the_public_index_keeps_the_servers_words_and_hides_load_failures(tmp_path: Path) -> None:
    """What anyone may read: a failure's own reason (file names, library messages) becomes
    "failed to load"; the reasons the server words itself are shown as they are."""
    publish_random_version(tmp_path, "m")
    publish_random_version(tmp_path, "kept", seed=1)
    publish_random_version(tmp_path, "kept", seed=2)  # version 1: not under the policy
    (tmp_path / "bad" / "1").mkdir(parents=True)
    (tmp_path / "bad" / "1" / "metadata.json").write_text("{")
    (tmp_path / "typo").mkdir()
    (tmp_path / "typo" / "config.json").write_text('{"batchin": {}}')

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            (tmp_path / "m" / "1" / "model.onnx").write_bytes(b"not a model")
            await reconciler.rescan()  # changed in place: the loaded copy keeps serving
            full = registry.index()
            assert {e.name: e.reason.split(":")[0] for e in full if e.reason} == {
                "bad": "cannot read metadata.json",
                "kept": "not served under the version policy",
                "m": "serving the copy loaded before; reloading failed",
                "typo": "invalid config.json",
            }
            assert [e.public() for e in full] == [
                IndexEntry("bad", "1", "UNAVAILABLE", "failed to load"),
                IndexEntry("kept", "1", "UNAVAILABLE", "not served under the version policy"),
                IndexEntry("kept", "2", "READY", ""),
                IndexEntry("m", "1", "READY", "serving the copy loaded before; reloading failed"),
                IndexEntry("typo", "", "UNAVAILABLE", "failed to load"),
            ]

    run(main())
