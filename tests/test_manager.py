"""The model manager with real ONNX models in a temporary repository."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from service.errors import InferenceFailed, InvalidInput, ModelNotFound, ModelNotReady
from service.metrics.families import Metrics
from service.models.manager import IndexEntry, LoadedVersion, ModelManager
from service.runtime.session import probe_gpu
from service.settings import Settings
from tests.factories import publish_random_version, reference_scores

Params = dict[str, np.ndarray]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@contextlib.asynccontextmanager
async def serving(root: Path, **overrides: Any) -> AsyncIterator[tuple[ModelManager, Metrics]]:
    metrics = Metrics()
    manager = ModelManager(Settings(model_repository=root, poll_interval_s=0, **overrides), metrics)
    await manager.start()
    try:
        yield manager, metrics
    finally:
        await manager.shutdown()


async def assert_serves(loaded: LoadedVersion, params: Params, n: int = 300, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, loaded.users.n_rows, n)
    items = rng.integers(0, loaded.items.n_rows, n)
    out = await loaded.infer({"user": users, "item": items})
    assert out["score"].dtype == np.float32
    np.testing.assert_allclose(out["score"], reference_scores(params, users, items), atol=1e-5)


def states(manager: ModelManager, name: str) -> dict[str, str]:
    return {e.version: e.state for e in manager.index() if e.name == name}


def reasons(manager: ModelManager, name: str) -> dict[str, str]:
    return {e.version: e.reason for e in manager.index() if e.name == name}


def rewrite_metadata(version_dir: Path, **changes: Any) -> None:
    """Update metadata.json (and its model checksum, unless given) after editing a version."""
    path = version_dir / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["model_sha256"] = hashlib.sha256((version_dir / "model.onnx").read_bytes()).hexdigest()
    metadata.update(changes)
    metadata = {k: v for k, v in metadata.items() if v is not None}
    path.write_text(json.dumps(metadata))


def poison_item_row(version_dir: Path, bad_row: int) -> None:
    """Make item row ``bad_row`` index far outside the item table: that row fails in the runtime."""
    model = onnx.load(str(version_dir / "model.onnx"))
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["item_idx" if name == "item" else name for name in node.input]
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(bad_row, dtype=np.int64), "poison_row"),
            numpy_helper.from_array(np.array(10**6, dtype=np.int64), "poison_jump"),
        ]
    )
    prefix = [
        helper.make_node("Equal", ["item", "poison_row"], ["is_bad"]),
        helper.make_node("Cast", ["is_bad"], ["bad_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["bad_int", "poison_jump"], ["jump"]),
        helper.make_node("Add", ["item", "jump"], ["item_idx"]),
    ]
    nodes = [*prefix, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.save_model(model, str(version_dir / "model.onnx"))
    rewrite_metadata(version_dir)


def hold_runs(loaded: LoadedVersion) -> tuple[threading.Event, threading.Event]:
    """Make the version's runs wait for the returned ``release`` event; ``entered`` marks a run."""
    entered, release = threading.Event(), threading.Event()
    batcher = loaded._batcher
    original: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] = batcher._runner

    def held(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        entered.set()
        assert release.wait(10)
        return original(feeds)

    batcher._runner = held
    return entered, release


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


def test_serves_the_latest_version_with_correct_scores(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "ranker", seed=1)
    _, params = publish_random_version(tmp_path, "ranker", seed=2, n_users=30, n_items=70)

    async def main() -> None:
        async with serving(tmp_path) as (manager, metrics):
            assert manager.ready
            loaded = manager.get("ranker")
            assert loaded.version == 2 and manager.get("ranker", 2) is loaded
            assert manager.model_versions("ranker") == [2]
            assert manager.index() == [
                IndexEntry("ranker", "1", "UNAVAILABLE", "not served under the version policy"),
                IndexEntry("ranker", "2", "READY", ""),
            ]
            assert loaded.users.n_rows == 31 and loaded.items.n_rows == 71
            assert loaded.metadata["n_item_rows"] == 71
            assert [s.name for s in loaded.inputs] == ["user", "item"]
            assert [(s.name, s.datatype, s.shape) for s in loaded.outputs] == [
                ("score", "FP32", (-1,))
            ]
            rng = np.random.default_rng(3)
            requests = [
                (rng.integers(0, 31, size), rng.integers(0, 71, size))
                for size in rng.integers(1, 400, 40)
            ]
            outs = await asyncio.gather(
                *(loaded.infer({"user": u, "item": i}) for u, i in requests)
            )
            for (users, items), out in zip(requests, outs, strict=True):
                expected = reference_scores(params, users, items)
                np.testing.assert_allclose(out["score"], expected, atol=1e-5)
            assert loaded.stats.execution_count < len(requests)
            labels = {"model": "ranker", "version": "2"}
            assert metrics.registry.get_sample_value("recserve_model_loaded", labels) == 1
            assert (
                metrics.registry.get_sample_value(
                    "recserve_model_load_duration_seconds_count", {"model": "ranker"}
                )
                == 1
            )
        assert not manager.ready

    run(main())


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
        async with serving(tmp_path) as (manager, _):
            assert manager.model_versions("m") == served
            assert manager.get("m").version == served[-1]
            for version in served:
                await assert_serves(manager.get("m", version), params[version - 1])
            not_served = {1, 2, 3} - set(served)
            for version in not_served:
                with pytest.raises(ModelNotReady, match="version policy"):
                    manager.get("m", version)

    run(main())


def test_hidden_and_invalid_names_are_ignored(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "good")
    for junk in ("good/.staging-x1", "good/0", "good/01", "good/latest", "Bad/1", ".hidden/1"):
        (tmp_path / junk).mkdir(parents=True)
    (tmp_path / "good" / "5").write_text("not a directory")
    (tmp_path / "README.md").write_text("# notes")

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            assert manager.index() == [IndexEntry("good", "1", "READY", "")]
            with pytest.raises(ModelNotFound):
                manager.get("Bad")
            with pytest.raises(ModelNotFound):
                manager.get("good", 5)

    run(main())


def test_new_version_replaces_the_old_after_its_queued_requests(tmp_path: Path) -> None:
    _, params1 = publish_random_version(tmp_path, "m", seed=1)

    async def main() -> None:
        async with serving(tmp_path) as (manager, metrics):
            old = manager.get("m")
            entered, release = hold_runs(old)
            users, items = np.arange(10) % 51, np.arange(10) % 41
            in_flight = asyncio.create_task(old.infer({"user": users, "item": items}))
            assert await asyncio.to_thread(entered.wait, 10)
            queued = asyncio.create_task(old.infer({"user": users[:3], "item": items[:3]}))
            await settle()

            _, params2 = publish_random_version(tmp_path, "m", seed=2)
            await manager.rescan()
            new = manager.get("m")
            assert new.version == 2 and manager.model_versions("m") == [2]
            assert states(manager, "m") == {"1": "UNLOADING", "2": "READY"}
            await assert_serves(new, params2)

            release.set()
            expected = reference_scores(params1, users, items)
            np.testing.assert_allclose((await in_flight)["score"], expected, atol=1e-5)
            np.testing.assert_allclose((await queued)["score"], expected[:3], atol=1e-5)
            await manager.wait_unloaded()
            assert states(manager, "m") == {"1": "UNAVAILABLE", "2": "READY"}
            with pytest.raises(ModelNotReady):
                manager.get("m", 1)
            value = metrics.registry.get_sample_value
            assert value("recserve_model_loaded", {"model": "m", "version": "1"}) == 0
            assert value("recserve_queue_rows", {"model": "m", "version": "1"}) is None
            assert value("recserve_queue_rows", {"model": "m", "version": "2"}) == 0

    run(main())


@pytest.mark.parametrize("damage", ["truncate", "garbage_without_checksum", "remove"])
def test_broken_model_file_leaves_the_old_version_serving(tmp_path: Path, damage: str) -> None:
    _, params1 = publish_random_version(tmp_path, "m", seed=1)

    async def main() -> None:
        async with serving(tmp_path) as (manager, metrics):
            published, params2 = publish_random_version(tmp_path, "m", seed=2)
            model_file = published.path / "model.onnx"
            good = model_file.read_bytes()
            if damage == "truncate":
                model_file.write_bytes(good[: len(good) // 2])
                expected_reason = "sha256"
            elif damage == "garbage_without_checksum":
                model_file.write_bytes(b"\x00garbage" * 100)
                rewrite_metadata(published.path, model_sha256="")
                expected_reason = "onnxruntime cannot load"
            else:
                model_file.unlink()
                expected_reason = "model.onnx is missing"

            await manager.rescan()
            assert manager.get("m").version == 1
            await assert_serves(manager.get("m"), params1)
            assert states(manager, "m") == {"1": "READY", "2": "UNAVAILABLE"}
            assert expected_reason in reasons(manager, "m")["2"]
            with pytest.raises(ModelNotReady, match=expected_reason):
                manager.get("m", 2)
            failures = {"model": "m"}
            value = metrics.registry.get_sample_value
            assert value("recserve_model_load_failures_total", failures) == 1

            await manager.rescan()  # unchanged files are not retried
            assert value("recserve_model_load_failures_total", failures) == 1

            tmp = published.path / "model.onnx.tmp"
            tmp.write_bytes(good)
            os.replace(tmp, model_file)
            rewrite_metadata(published.path)
            await manager.rescan()
            assert manager.get("m").version == 2
            await assert_serves(manager.get("m"), params2)
            await manager.wait_unloaded()
            assert states(manager, "m") == {"1": "UNAVAILABLE", "2": "READY"}

    run(main())


def test_broken_newest_version_at_start_serves_the_previous(tmp_path: Path) -> None:
    _, params1 = publish_random_version(tmp_path, "m", seed=1)
    published, _ = publish_random_version(tmp_path, "m", seed=2)
    (published.path / "items.txt").write_text("only-one-item\n")

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            assert manager.model_versions("m") == [1]
            await assert_serves(manager.get("m"), params1)
            assert "items.txt has 1 ids" in reasons(manager, "m")["2"]

    run(main())


def test_contract_mismatch_is_rejected(tmp_path: Path) -> None:
    published, _ = publish_random_version(tmp_path, "m")
    model = onnx.load(str(published.path / "model.onnx"))
    model.graph.input[1].name = "product"
    for node in model.graph.node:
        node.input[:] = ["product" if name == "item" else name for name in node.input]
    onnx.save_model(model, str(published.path / "model.onnx"))
    rewrite_metadata(published.path)

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            assert states(manager, "m") == {"1": "UNAVAILABLE"}
            assert "do not match the contract" in reasons(manager, "m")["1"]
            with pytest.raises(ModelNotReady, match="do not match the contract"):
                manager.get("m")

    run(main())


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ("items_short", "items.txt has 39 ids"),
        ("users_missing", "users.txt is missing"),
        ("claims_more_rows", "tables do not hold the rows its metadata claims"),
        ("metadata_not_json", "cannot read metadata.json"),
        ("metadata_no_rows", "'n_user_rows' must be a positive integer"),
        ("metadata_wrong_inputs", "do not match the contract"),
    ],
)
def test_vocabulary_and_metadata_mismatches_are_rejected(
    tmp_path: Path, edit: str, reason: str
) -> None:
    published, _ = publish_random_version(tmp_path, "m", n_users=50, n_items=40)
    path = published.path
    if edit == "items_short":
        lines = (path / "items.txt").read_text().splitlines()
        (path / "items.txt").write_text("\n".join(lines[:-1]) + "\n")
    elif edit == "users_missing":
        (path / "users.txt").unlink()
    elif edit == "claims_more_rows":
        # The vocabulary and metadata agree on 60 items; the model's table holds 41 rows.
        (path / "items.txt").write_text("".join(f"i{i}\n" for i in range(60)))
        rewrite_metadata(path, n_item_rows=61)
    elif edit == "metadata_not_json":
        (path / "metadata.json").write_text("{")
    elif edit == "metadata_no_rows":
        rewrite_metadata(path, n_user_rows=None)
    else:
        rewrite_metadata(path, inputs=[{"name": "user", "datatype": "INT64", "shape": [-1]}])

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            assert states(manager, "m") == {"1": "UNAVAILABLE"}
            assert reason in reasons(manager, "m")["1"]

    run(main())


def test_model_replaced_in_place_is_reloaded(tmp_path: Path) -> None:
    _, params_a = publish_random_version(tmp_path, "m", seed=1)
    other, params_b = publish_random_version(tmp_path / "elsewhere", "m", seed=2, n_items=60)

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            old = manager.get("m", 1)
            await assert_serves(old, params_a)
            for name in ("users.txt", "items.txt", "model.onnx", "metadata.json"):
                tmp = tmp_path / "m" / "1" / f".{name}.tmp"
                shutil.copyfile(other.path / name, tmp)
                os.replace(tmp, tmp_path / "m" / "1" / name)
            await manager.rescan()
            new = manager.get("m", 1)
            assert new is not old and new.items.n_rows == 61
            await assert_serves(new, params_b)
            await manager.wait_unloaded()
            assert old.replaced_by is new
            # A request that looked the old one up before the swap is served by the new one.
            await assert_serves(old, params_b)
            assert states(manager, "m") == {"1": "READY"}

    run(main())


def test_repository_disappearing_and_coming_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "repo"
    _, params1 = publish_random_version(root, "m", seed=1)

    async def main() -> None:
        async with serving(root) as (manager, _):
            root.rename(tmp_path / "moved")
            with caplog.at_level(logging.WARNING, logger="service.models.manager"):
                await manager.rescan()
                await manager.rescan()
            warnings = [r for r in caplog.records if "cannot be read" in r.getMessage()]
            assert len(warnings) == 1
            await assert_serves(manager.get("m"), params1)

            (tmp_path / "moved").rename(root)
            _, params2 = publish_random_version(root, "m", seed=2)
            await manager.rescan()
            assert manager.get("m").version == 2
            await assert_serves(manager.get("m"), params2)

    run(main())


def test_missing_repository_at_start_is_picked_up_later(tmp_path: Path) -> None:
    root = tmp_path / "repo"

    async def main() -> None:
        async with serving(root) as (manager, _):
            assert manager.ready and manager.index() == []
            _, params = publish_random_version(root, "m")
            await manager.rescan()
            await assert_serves(manager.get("m"), params)

    run(main())


def test_model_removed_from_the_repository_is_unloaded(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "gone")
    _, params = publish_random_version(tmp_path, "kept")

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            shutil.rmtree(tmp_path / "gone")
            await manager.rescan()
            await manager.wait_unloaded()
            with pytest.raises(ModelNotFound):
                manager.get("gone")
            assert [e.name for e in manager.index()] == ["kept"]
            await assert_serves(manager.get("kept"), params)

    run(main())


def test_explicit_unload_and_load(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m")
    publish_random_version(tmp_path, "broken")
    (tmp_path / "broken" / "1" / "model.onnx").write_bytes(b"")

    async def main() -> None:
        async with serving(tmp_path) as (manager, metrics):
            await manager.unload("m")
            with pytest.raises(ModelNotReady, match="unloaded"):
                manager.get("m")
            assert manager.model_versions("m") == []
            assert manager.index()[1:] == [IndexEntry("m", "1", "UNAVAILABLE", "unloaded")]
            labels = {"model": "m", "version": "1"}
            assert metrics.registry.get_sample_value("recserve_model_loaded", labels) == 0
            await manager.rescan()  # polling does not bring it back
            assert manager.model_versions("m") == []

            await manager.load("m")
            await assert_serves(manager.get("m"), params)
            await manager.load("m")  # loading a loaded model keeps it serving
            assert manager.model_versions("m") == [1]

            with pytest.raises(ModelNotFound):
                await manager.load("nope")
            with pytest.raises(ModelNotFound):
                await manager.unload("nope")
            with pytest.raises(InvalidInput, match=r"failed to load 'broken'.*sha256"):
                await manager.load("broken")

    run(main())


def test_invalid_config_fails_the_model_with_a_reason(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m")
    config = tmp_path / "m" / "config.json"
    config.write_text('{"batching": {"max_batch_rowz": 4}}')

    async def main() -> None:
        async with serving(tmp_path) as (manager, metrics):
            assert states(manager, "m") == {"1": "UNAVAILABLE"}
            assert "max_batch_rowz" in reasons(manager, "m")["1"]
            with pytest.raises(ModelNotReady, match=r"invalid config\.json"):
                manager.get("m")
            config.write_text('{"batching": {"max_batch_rows": 4}}')
            await manager.rescan()
            loaded = manager.get("m")
            assert loaded.config.batching.max_batch_rows == 4
            await assert_serves(loaded, params, n=10)
            assert loaded.stats.execution_count == 3  # batches of at most 4 rows

            config.write_text("not json")  # a served model keeps serving
            await manager.rescan()
            assert manager.get("m") is loaded
            value = metrics.registry.get_sample_value
            assert value("recserve_model_load_failures_total", {"model": "m"}) == 2

    run(main())


def test_infer_validates_before_queueing(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m", n_users=50, n_items=40)

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            loaded = manager.get("m")
            ok_user, ok_item = np.array([1, 2]), np.array([3, 4])
            bad: list[tuple[dict[str, np.ndarray], str]] = [
                ({"user": ok_user, "item": np.array([3, 41])}, r"'item' value 41 at index 1"),
                ({"user": np.array([-1, 2]), "item": ok_item}, r"'user' value -1 at index 0"),
                ({"user": ok_user, "item": ok_item.astype(np.float32)}, "datatype float32"),
                ({"user": ok_user}, r"missing \['item'\]"),
                ({"user": ok_user, "item": ok_item, "x": ok_item}, r"unexpected \['x'\]"),
                ({"user": ok_user, "item": np.array([1, 2, 3])}, "same number of rows"),
                ({"user": ok_user, "item": np.ones((2, 2), np.int64)}, "shape"),
            ]
            for inputs, reason in bad:
                with pytest.raises(InvalidInput, match=reason):
                    await loaded.infer(inputs)
            assert loaded.stats.execution_count == 0

            out = await loaded.infer(
                {"user": ok_user.astype(np.int32).reshape(2, 1), "item": ok_item}
            )
            expected = reference_scores(params, ok_user, ok_item)
            np.testing.assert_allclose(out["score"], expected, atol=1e-5)
            empty = await loaded.infer({"user": ok_user[:0], "item": ok_item[:0]})
            assert empty["score"].shape == (0,) and empty["score"].dtype == np.float32

    run(main())


def test_failing_request_fails_alone_in_a_mixed_batch(tmp_path: Path) -> None:
    published, params = publish_random_version(tmp_path, "m", n_users=50, n_items=40)
    poison_item_row(published.path, bad_row=7)
    (tmp_path / "m" / "config.json").write_text('{"warmup": {"batch_sizes": [1]}}')

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            loaded = manager.get("m")
            rng = np.random.default_rng(0)
            requests = []
            for k in range(12):
                items = rng.choice(np.setdiff1d(np.arange(41), [7]), 20)
                if k == 6:
                    items[5] = 7
                requests.append((rng.integers(0, 51, 20), items))
            results = await asyncio.gather(
                *(loaded.infer({"user": u, "item": i}) for u, i in requests),
                return_exceptions=True,
            )
            for k, ((users, items), result) in enumerate(zip(requests, results, strict=True)):
                if k == 6:
                    assert isinstance(result, InferenceFailed)
                    assert "Gather" in result.message
                else:
                    assert isinstance(result, dict)
                    expected = reference_scores(params, users, items)
                    np.testing.assert_allclose(result["score"], expected, atol=1e-5)
            assert loaded.stats.fail_count == 1 and loaded.stats.success_count == 11
            assert loaded.stats.execution_count > 2  # the mixed batch was retried in parts

    run(main())


def test_unknown_ids_map_to_row_zero_and_are_counted(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m", n_users=5, n_items=5)

    async def main() -> None:
        async with serving(tmp_path) as (manager, metrics):
            loaded = manager.get("m")
            rows, unknown = loaded.item_rows(["i4", "zz", "i0", "yy"])
            assert rows.tolist() == [5, 0, 1, 0] and unknown == ["zz", "yy"]
            rows, unknown = loaded.user_rows(["u2"])
            assert rows.tolist() == [3] and unknown == []
            value = metrics.registry.get_sample_value
            labels = {"model": "m", "version": "1", "kind": "item"}
            assert value("recserve_unknown_ids_total", labels) == 2
            assert value("recserve_unknown_ids_total", {**labels, "kind": "user"}) is None

    run(main())


def test_lookup_errors(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m")

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            with pytest.raises(ModelNotFound):
                manager.get("nope")
            with pytest.raises(ModelNotFound):
                manager.model_versions("nope")
            with pytest.raises(ModelNotFound):
                manager.get("m", 9)

    run(main())


def test_provider_is_chosen_once_and_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    publish_random_version(tmp_path, "a")
    publish_random_version(tmp_path, "b")

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            assert manager.get("a").provider == manager.provider
            if not probe_gpu()[0]:
                assert manager.provider == "CPUExecutionProvider"

    with caplog.at_level(logging.INFO, logger="service.models.manager"):
        run(main())
    lines = [r.getMessage() for r in caplog.records if "execution provider" in r.getMessage()]
    assert len(lines) == 1
    captured = capfd.readouterr()
    assert "CUDA" not in captured.err + captured.out


@pytest.mark.skipif(probe_gpu()[0], reason="needs a machine without a GPU")
def test_cuda_required_by_a_model_without_a_gpu_fails_its_load(tmp_path: Path) -> None:
    publish_random_version(tmp_path, "m")
    (tmp_path / "m" / "config.json").write_text('{"execution": {"provider": "cuda"}}')

    async def main() -> None:
        async with serving(tmp_path) as (manager, _):
            assert "provider 'cuda' configured but not usable" in reasons(manager, "m")["1"]

    run(main())


def test_shutdown_finishes_queued_requests(tmp_path: Path) -> None:
    _, params = publish_random_version(tmp_path, "m")

    async def main() -> None:
        metrics = Metrics()
        manager = ModelManager(Settings(model_repository=tmp_path, poll_interval_s=0), metrics)
        await manager.start()
        loaded = manager.get("m")
        entered, release = hold_runs(loaded)
        users, items = np.arange(5), np.arange(5)
        first = asyncio.create_task(loaded.infer({"user": users, "item": items}))
        assert await asyncio.to_thread(entered.wait, 10)
        second = asyncio.create_task(loaded.infer({"user": users[::-1], "item": items}))
        await settle()
        stopping = asyncio.create_task(manager.shutdown())
        await settle()
        assert not manager.ready and not stopping.done()
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
        manager = ModelManager(settings, metrics)
        await manager.start()
        try:
            _, params = publish_random_version(tmp_path, "m", seed=2)
            for _ in range(200):
                if manager.model_versions("m") == [2]:
                    break
                await asyncio.sleep(0.05)
            await assert_serves(manager.get("m"), params)
        finally:
            await manager.shutdown()

    run(main())
