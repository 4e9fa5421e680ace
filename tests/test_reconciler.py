"""The reconciler with real ONNX models in a temporary repository: version policies, hot swap,
faults that leave the old version serving, reload in place, explicit load and unload, shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelrepo import MODEL_FILE, Source
from service.errors import InvalidInput, ModelNotFound, ModelNotReady, ShuttingDown
from service.metrics.families import Metrics
from service.models.reconciler import Reconciler
from service.models.registry import IndexEntry
from service.runtime.provider import probe_gpu
from service.settings import Settings
from tests.factories import publish_random_version, reference_scores
from tests.model_tools import (
    assert_serves,
    hold_runs,
    reasons,
    rewrite_manifest,
    rows_of,
    run,
    serving,
    settle,
    states,
)


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ({"latest": {"num_versions": 2}}, [2, 3]),
        ({"all": {}}, [1, 2, 3]),
        ({"specific": {"versions": [1, 3, 8]}}, [1, 3]),
    ],
)
def test_version_policies(tmp_path: Path, policy: dict[str, Any], served: list[int]) -> None:
    params = [publish_random_version(tmp_path, "m", seed=s)[1] for s in range(3)]
    (tmp_path / "m" / "config.json").write_text(json.dumps({"version_policy": policy}))

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            assert registry.versions("m") == served
            assert registry.get("m").version == served[-1]
            for version in served:
                await assert_serves(registry.get("m", version), params[version - 1])
            not_served = {1, 2, 3} - set(served)
            for version in not_served:
                not_ready = rf"^model 'm' version {version} is not ready$"
                with pytest.raises(ModelNotReady, match=not_ready):
                    registry.get("m", version)
                assert reasons(registry, "m")[str(version)] == "not served under the version policy"

    run(main())


def test_new_version_replaces_the_old_after_its_queued_requests(tmp_path: Path) -> None:
    _, params1 = publish_random_version(tmp_path, "m", seed=1)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, metrics):
            registry = reconciler.registry
            old = registry.get("m")
            entered, release = hold_runs(old)
            users, items = np.arange(10) % 51, np.arange(10) % 41
            in_flight = asyncio.create_task(old.infer({"user": users, "item": items}))
            assert await asyncio.to_thread(entered.wait, 10)
            queued = asyncio.create_task(old.infer({"user": users[:3], "item": items[:3]}))
            await settle()

            _, params2 = publish_random_version(tmp_path, "m", seed=2)
            await reconciler.rescan()
            new = registry.get("m")
            assert new.version == 2 and registry.versions("m") == [2]
            assert states(registry, "m") == {"1": "UNLOADING", "2": "READY"}
            await assert_serves(new, params2)

            release.set()
            expected = reference_scores(params1, users, items)
            np.testing.assert_allclose((await in_flight)["score"], expected, atol=1e-5)
            np.testing.assert_allclose((await queued)["score"], expected[:3], atol=1e-5)
            await reconciler.wait_unloaded()
            assert states(registry, "m") == {"1": "UNAVAILABLE", "2": "READY"}
            with pytest.raises(ModelNotReady):
                registry.get("m", 1)
            value = metrics.registry.get_sample_value
            assert value("recserve_model_loaded", {"model": "m", "version": "1"}) == 0
            assert value("recserve_queue_rows", {"model": "m", "version": "1"}) is None
            assert value("recserve_queue_rows", {"model": "m", "version": "2"}) == 0

    run(main())


@pytest.mark.parametrize("damage", ["truncate", "garbage_without_checksum", "remove"])
def test_broken_model_file_leaves_the_old_version_serving(tmp_path: Path, damage: str) -> None:
    _, params1 = publish_random_version(tmp_path, "m", seed=1)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, metrics):
            registry = reconciler.registry
            published, params2 = publish_random_version(tmp_path, "m", seed=2)
            model_file = published.path / MODEL_FILE
            good = model_file.read_bytes()
            if damage == "truncate":
                model_file.write_bytes(good[: len(good) // 2])
                expected_reason = "model.onnx sha256"
            elif damage == "garbage_without_checksum":
                model_file.write_bytes(b"\x00garbage" * 100)
                rewrite_manifest(published.path, unchecked=(MODEL_FILE,))
                expected_reason = "onnxruntime cannot load"
            else:
                model_file.unlink()
                expected_reason = "model.onnx is missing"

            await reconciler.rescan()
            assert registry.get("m").version == 1
            await assert_serves(registry.get("m"), params1)
            assert states(registry, "m") == {"1": "READY", "2": "UNAVAILABLE"}
            assert expected_reason in reasons(registry, "m")["2"]
            # The reason is the index's and the log's: the caller is told only "not ready".
            with pytest.raises(ModelNotReady) as refused:
                registry.get("m", 2)
            assert refused.value.message == "model 'm' version 2 is not ready"
            assert refused.value.headers() == {"Retry-After": "1"}
            failures = {"model": "m"}
            value = metrics.registry.get_sample_value
            assert value("recserve_model_load_failures_total", failures) == 1

            await reconciler.rescan()  # unchanged files are not retried
            assert value("recserve_model_load_failures_total", failures) == 1

            tmp = published.path / "model.onnx.tmp"
            tmp.write_bytes(good)
            os.replace(tmp, model_file)
            rewrite_manifest(published.path)
            await reconciler.rescan()
            assert registry.get("m").version == 2
            await assert_serves(registry.get("m"), params2)
            await reconciler.wait_unloaded()
            assert states(registry, "m") == {"1": "UNAVAILABLE", "2": "READY"}

    run(main())


def test_broken_newest_version_at_start_serves_the_previous(tmp_path: Path) -> None:
    _, params1 = publish_random_version(tmp_path, "m", seed=1)
    published, _ = publish_random_version(tmp_path, "m", seed=2)
    (published.path / "items.txt").write_text("only-one-item\n")
    rewrite_manifest(published.path)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            assert reconciler.registry.versions("m") == [1]
            await assert_serves(reconciler.registry.get("m"), params1)
            assert "items.txt has 1 ids" in reasons(reconciler.registry, "m")["2"]

    run(main())


def test_a_served_version_whose_reload_fails_keeps_serving_and_says_why(tmp_path: Path) -> None:
    published, params = publish_random_version(tmp_path, "m")

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            served = registry.get("m", 1)
            (published.path / MODEL_FILE).write_bytes(b"")
            await reconciler.rescan()
            assert registry.get("m", 1) is served
            await assert_serves(served, params)
            [entry] = registry.index()
            assert entry.state == "READY"
            assert entry.reason.startswith("serving the copy loaded before; reloading failed:")
            assert "model.onnx sha256" in entry.reason

    run(main())


def test_model_replaced_in_place_is_reloaded(tmp_path: Path) -> None:
    _, params_a = publish_random_version(tmp_path, "m", seed=1)
    other, params_b = publish_random_version(tmp_path / "elsewhere", "m", seed=2, n_items=60)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            old = registry.get("m", 1)
            await assert_serves(old, params_a)
            for path in sorted(other.path.iterdir()):
                tmp = tmp_path / "m" / "1" / f".{path.name}.tmp"
                shutil.copyfile(path, tmp)
                os.replace(tmp, tmp_path / "m" / "1" / path.name)
            await reconciler.rescan()
            new = registry.get("m", 1)
            assert new is not old and rows_of(new, Source.ITEM) == 61
            await assert_serves(new, params_b)
            await reconciler.wait_unloaded()
            assert old.replaced_by is new
            # A request that looked the old one up before the swap is served by the new one.
            await assert_serves(old, params_b)
            assert states(registry, "m") == {"1": "READY"}

    run(main())


def test_repository_disappearing_and_coming_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "repo"
    _, params1 = publish_random_version(root, "m", seed=1)

    async def main() -> None:
        async with serving(root) as (reconciler, _):
            root.rename(tmp_path / "moved")
            with caplog.at_level(logging.WARNING, logger="service.models.reconciler"):
                await reconciler.rescan()
                await reconciler.rescan()
            warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
            assert len(warnings) == 1
            await assert_serves(reconciler.registry.get("m"), params1)

            (tmp_path / "moved").rename(root)
            _, params2 = publish_random_version(root, "m", seed=2)
            await reconciler.rescan()
            assert reconciler.registry.get("m").version == 2
            await assert_serves(reconciler.registry.get("m"), params2)

    run(main())


def test_missing_repository_at_start_is_picked_up_later(tmp_path: Path) -> None:
    root = tmp_path / "repo"

    async def main() -> None:
        async with serving(root) as (reconciler, _):
            assert reconciler.registry.ready and reconciler.registry.index() == []
            _, params = publish_random_version(root, "m")
            await reconciler.rescan()
            await assert_serves(reconciler.registry.get("m"), params)

    run(main())


def test_model_removed_from_the_repository_is_unloaded(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "gone")
    _, params = publish_random_version(tmp_path, "kept")

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, metrics):
            registry = reconciler.registry
            shutil.rmtree(tmp_path / "gone")
            await reconciler.rescan()
            await reconciler.wait_unloaded()
            with pytest.raises(ModelNotFound):
                registry.get("gone")
            assert [e.name for e in registry.index()] == ["kept"]
            await assert_serves(registry.get("kept"), params)
            labels = {"model": "gone", "version": "1"}
            assert metrics.registry.get_sample_value("recserve_model_loaded", labels) == 0

    run(main())


def test_version_removed_from_disk_unloads_then_is_forgotten(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m", seed=1)
    (tmp_path / "m" / "config.json").write_text('{"version_policy": {"all": {}}}')
    published, _ = publish_random_version(tmp_path, "m", seed=2)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            registry = reconciler.registry
            entered, release = hold_runs(registry.get("m", 2))
            task = asyncio.create_task(
                registry.get("m", 2).infer({"user": np.array([1]), "item": np.array([1])})
            )
            assert await asyncio.to_thread(entered.wait, 10)
            shutil.rmtree(published.path)
            await reconciler.rescan()
            assert states(registry, "m") == {"1": "READY", "2": "UNLOADING"}
            with pytest.raises(ModelNotReady):
                registry.get("m", 2)
            release.set()
            await task
            await reconciler.wait_unloaded()
            assert states(registry, "m") == {"1": "READY"}
            with pytest.raises(ModelNotFound):
                registry.get("m", 2)

    run(main())


def test_explicit_unload_and_load(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m")
    publish_random_version(tmp_path, "broken")
    (tmp_path / "broken" / "1" / MODEL_FILE).write_bytes(b"")

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, metrics):
            registry = reconciler.registry
            await reconciler.unload("m")
            with pytest.raises(ModelNotReady, match=r"^model 'm' has no version ready$"):
                registry.get("m")
            assert registry.versions("m") == []
            assert registry.index()[1:] == [IndexEntry("m", "1", "UNAVAILABLE", "unloaded")]
            labels = {"model": "m", "version": "1"}
            assert metrics.registry.get_sample_value("recserve_model_loaded", labels) == 0
            await reconciler.rescan()  # polling does not bring it back
            assert registry.versions("m") == []

            await reconciler.load("m")
            await assert_serves(registry.get("m"), params)
            await reconciler.load("m")  # loading a loaded model keeps it serving
            assert registry.versions("m") == [1]

            with pytest.raises(ModelNotFound):
                await reconciler.load("nope")
            with pytest.raises(ModelNotFound):
                await reconciler.unload("nope")
            with pytest.raises(InvalidInput, match=r"failed to load 'broken'.*sha256"):
                await reconciler.load("broken")

    run(main())


def test_invalid_config_fails_the_model_with_a_reason(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m")
    config = tmp_path / "m" / "config.json"
    config.write_text('{"batching": {"max_batch_rowz": 4}}')

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, metrics):
            registry = reconciler.registry
            assert states(registry, "m") == {"1": "UNAVAILABLE"}
            assert "max_batch_rowz" in reasons(registry, "m")["1"]
            assert "invalid config.json" in reasons(registry, "m")["1"]
            with pytest.raises(ModelNotReady, match=r"^model 'm' has no version ready$"):
                registry.get("m")
            config.write_text('{"batching": {"max_batch_rows": 4}}')
            await reconciler.rescan()
            served = registry.get("m")
            assert served.config.batching.max_batch_rows == 4
            await assert_serves(served, params, n=10)
            assert served.stats.execution_count == 3  # batches of at most 4 rows

            config.write_text("not json")  # a served model keeps serving
            await reconciler.rescan()
            assert registry.get("m") is served
            value = metrics.registry.get_sample_value
            assert value("recserve_model_load_failures_total", {"model": "m"}) == 2

    run(main())


@pytest.mark.skipif(probe_gpu()[0], reason="needs a machine without a GPU")
def test_cuda_required_by_a_model_without_a_gpu_fails_its_load(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m")
    (tmp_path / "m" / "config.json").write_text('{"execution": {"provider": "cuda"}}')

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            reason = reasons(reconciler.registry, "m")["1"]
            assert "provider 'cuda' configured but not usable" in reason

    run(main())


def test_shutdown_finishes_queued_requests_and_is_reported_one_way(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m")

    async def main() -> None:
        metrics = Metrics()
        reconciler = Reconciler(Settings(model_repository=tmp_path, poll_interval_s=0), metrics)
        await reconciler.start()
        registry = reconciler.registry
        served = registry.get("m")
        entered, release = hold_runs(served)
        users, items = np.arange(5), np.arange(5)
        first = asyncio.create_task(served.infer({"user": users, "item": items}))
        assert await asyncio.to_thread(entered.wait, 10)
        second = asyncio.create_task(served.infer({"user": users[::-1], "item": items}))
        await settle()
        stopping = asyncio.create_task(reconciler.shutdown())
        await settle()
        assert not registry.ready and not stopping.done()
        with pytest.raises(ShuttingDown, match="shutting down"):
            registry.get("m")
        with pytest.raises(ShuttingDown, match="shutting down"):
            await reconciler.load("m")
        with pytest.raises(ShuttingDown, match="shutting down"):
            await reconciler.unload("m")
        release.set()
        await stopping
        expected = reference_scores(params, users, items)
        np.testing.assert_allclose((await first)["score"], expected, atol=1e-5)
        expected = reference_scores(params, users[::-1], items)
        np.testing.assert_allclose((await second)["score"], expected, atol=1e-5)

    run(main())


def test_polling_picks_up_new_versions(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m", seed=1)

    async def main() -> None:
        metrics = Metrics()
        settings = Settings(model_repository=tmp_path, poll_interval_s=0.05)
        reconciler = Reconciler(settings, metrics)
        await reconciler.start()
        try:
            _, params = publish_random_version(tmp_path, "m", seed=2)
            for _ in range(200):
                if reconciler.registry.versions("m") == [2]:
                    break
                await asyncio.sleep(0.05)
            await assert_serves(reconciler.registry.get("m"), params)
        finally:
            await reconciler.shutdown()

    run(main())
