"""The runtime room: provider probe and choice, the graph checked against a signature, warmup from
the signature, runs (plain, bound, padded)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from modelrepo import InputSpec, OutputSpec, Role, Signature, Source, two_id_signature
from service.errors import ModelLoadError
from service.runtime import provider as runtime_provider
from service.runtime import session as runtime
from service.runtime.conformance import check_graph, signature_specs
from service.runtime.provider import CPU, CUDA, ProviderChoice, choose_provider, probe_gpu
from service.runtime.session import Runtime, TensorSpec
from service.runtime.warmup import feeds, warm_up
from tests.factories import random_params, reference_scores
from training.export import build_graph


@pytest.fixture(autouse=True)
def _fresh_probe() -> Iterator[None]:
    runtime_provider._probe_cached.cache_clear()
    yield
    runtime_provider._probe_cached.cache_clear()


def model_bytes(n_users: int = 6, n_items: int = 5, seed: int = 0) -> tuple[bytes, Any]:
    params = random_params(n_users, n_items, seed=seed)
    return build_graph(params, "mlp").SerializeToString(), params


def test_auto_on_this_machine_picks_cpu_quietly(capfd: pytest.CaptureFixture[str]) -> None:
    has_gpu, why = probe_gpu()
    choice = choose_provider("auto")
    data, params = model_bytes()
    session = Runtime(data, provider=choice.provider)
    users, items = np.array([0, 1, 5]), np.array([4, 0, 2])
    scores = session.run({"user": users, "item": items})["score"]
    captured = capfd.readouterr()
    assert "CUDA" not in captured.err + captured.out  # no failed attempt at the CUDA provider
    if has_gpu:
        assert choice.provider == CUDA
    else:
        assert choice.provider == CPU and session.provider == CPU
        assert why in choice.reason
    np.testing.assert_allclose(scores, reference_scores(params, users, items), atol=1e-6)


def test_cpu_preference_does_not_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_: int) -> tuple[bool, str]:
        raise AssertionError("probed")

    monkeypatch.setattr(runtime_provider, "probe_gpu", fail)
    assert choose_provider("cpu").provider == CPU


def test_probe_without_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert probe_gpu() == (False, "this onnxruntime build has no CUDA provider")


class FakeLibCuda:
    def __init__(self, init_status: int, devices: int) -> None:
        self.init_status = init_status
        self.devices = devices

    def cuInit(self, flags: int) -> int:
        return self.init_status

    def cuDeviceGetCount(self, count: Any) -> int:
        count._obj.value = self.devices
        return 0


@pytest.mark.parametrize(
    ("lib", "expected", "reason"),
    [
        (None, False, "libcuda.so.1 not found"),
        (FakeLibCuda(100, 0), False, "cuInit returned 100"),
        (FakeLibCuda(0, 0), False, "reports no GPU"),
        (FakeLibCuda(0, 2), True, "2 GPU(s) found"),
    ],
)
def test_probe_asks_the_driver(
    monkeypatch: pytest.MonkeyPatch, lib: FakeLibCuda | None, expected: bool, reason: str
) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])

    def cdll(name: str) -> FakeLibCuda:
        if lib is None:
            raise OSError(f"{name}: cannot open shared object file")
        return lib

    monkeypatch.setattr(ctypes, "CDLL", cdll)
    has_gpu, why = probe_gpu()
    assert has_gpu is expected
    assert reason in why
    if expected:
        assert choose_provider("auto").provider == CUDA
        _, why_far = probe_gpu(5)
        assert "GPU 5 requested" in why_far


def test_cuda_preference_without_a_gpu_is_a_load_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_provider, "probe_gpu", lambda _: (False, "no GPU here"))
    with pytest.raises(ModelLoadError, match="no GPU here"):
        choose_provider("cuda")
    assert choose_provider("auto") == ProviderChoice(CPU, "provider 'auto': no GPU here")


TWO_IDS = two_id_signature(6, 5)


def test_specs_of_an_exported_model_fit_the_two_id_signature() -> None:
    session = Runtime(model_bytes()[0])
    assert session.inputs == (
        TensorSpec("user", "INT64", (-1,)),
        TensorSpec("item", "INT64", (-1,)),
    )
    assert session.outputs == (TensorSpec("score", "FP32", (-1,)),)
    assert signature_specs(TWO_IDS) == (session.inputs, session.outputs)
    check_graph(TWO_IDS, session.inputs, session.outputs)


USER, ITEM = TensorSpec("user", "INT64", (-1,)), TensorSpec("item", "INT64", (-1,))
SCORE = TensorSpec("score", "FP32", (-1,))


@pytest.mark.parametrize(
    ("inputs", "outputs", "reason"),
    [
        (
            [USER, TensorSpec("product", "INT64", (-1,))],
            [SCORE],
            r"model inputs \['product', 'user'\] do not match the contract \['item', 'user'\]",
        ),
        ([USER], [SCORE], "do not match the contract"),
        ([USER, ITEM, TensorSpec("extra", "FP32", (-1,))], [SCORE], "do not match the contract"),
        ([USER, TensorSpec("item", "INT32", (-1,))], [SCORE], "input 'item' has datatype INT32"),
        (
            [USER, TensorSpec("item", "INT64", (-1, 1))],
            [SCORE],
            r"input 'item' has shape \[-1, 1\], expected \[-1\]",
        ),
        ([USER, TensorSpec("item", "INT64", (8,))], [SCORE], "input 'item' has shape"),
        ([USER, ITEM], [TensorSpec("prob", "FP32", (-1,))], r"no output \['score'\]"),
        ([USER, ITEM], [TensorSpec("score", "FP32", (-1, 1))], "output 'score' has shape"),
        ([USER, ITEM], [TensorSpec("score", "FP64", (-1,))], "output 'score' has datatype FP64"),
    ],
)
def test_graphs_that_do_not_fit_the_signature(
    inputs: list[TensorSpec], outputs: list[TensorSpec], reason: str
) -> None:
    with pytest.raises(ModelLoadError, match=reason):
        check_graph(TWO_IDS, inputs, outputs)


SIDE = Signature(
    inputs=(
        InputSpec(
            name="user", role=Role.ID, source=Source.USER, dtype="INT64", shape=(-1,), n_rows=7,
            vocabulary="users.txt",
        ),
        InputSpec(
            name="features", role=Role.DENSE, source=Source.CONTEXT, dtype="FP32", shape=(-1, 3)
        ),
        InputSpec(
            name="genres", role=Role.MULTI_HOT, source=Source.CONTEXT, dtype="INT64",
            shape=(-1, 4), n_rows=3,
        ),
    ),
    outputs=(OutputSpec(name="score", dtype="FP32", shape=(-1,)),),
    score="score",
)  # fmt: skip


def test_a_wider_signature_is_checked_dimension_by_dimension() -> None:
    features = TensorSpec("features", "FP32", (-1, 3))
    genres = TensorSpec("genres", "INT64", (-1, -1))  # a dynamic width fits any declared one
    check_graph(SIDE, [USER, features, genres], [SCORE, TensorSpec("extra", "FP32", (-1,))])
    narrow = TensorSpec("features", "FP32", (-1, 2))
    with pytest.raises(ModelLoadError, match=r"'features' has shape \[-1, 2\], expected \[-1, 3\]"):
        check_graph(SIDE, [USER, narrow, genres], [SCORE])


def test_warmup_feeds_follow_the_signature() -> None:
    edge = feeds(SIDE, np.array([0, -1]))
    assert edge["user"].tolist() == [0, 6] and edge["user"].dtype == np.int64
    assert edge["features"].shape == (2, 3) and edge["genres"].shape == (2, 4)
    assert edge["features"].dtype == np.float32 and not edge["features"].any()
    assert edge["genres"].dtype == np.int64 and edge["genres"].tolist() == [[0] * 4, [2] * 4]
    batch = feeds(SIDE, np.arange(10))
    assert batch["user"].tolist() == [0, 1, 2, 3, 4, 5, 6, 0, 1, 2]
    assert batch["features"].shape == (10, 3)
    assert batch["genres"][:, 0].tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]


def test_renamed_graph_input_fails_the_contract() -> None:
    model = build_graph(random_params(4, 4), "mlp")
    model.graph.input[1].name = "product"
    for node in model.graph.node:
        node.input[:] = ["product" if name == "item" else name for name in node.input]
    session = Runtime(model.SerializeToString())
    with pytest.raises(ModelLoadError, match="do not match the contract"):
        check_graph(two_id_signature(4, 4), session.inputs, session.outputs)


def test_unloadable_bytes() -> None:
    data = model_bytes()[0]
    for broken in (b"not a model", data[: len(data) // 2]):
        with pytest.raises(ModelLoadError, match="onnxruntime cannot load"):
            Runtime(broken)


def test_warmup_checks_every_table_holds_the_rows_claimed() -> None:
    session = Runtime(model_bytes(n_users=6, n_items=5)[0])
    warm_up(session, TWO_IDS, [1, 64])
    with pytest.raises(ModelLoadError, match=r"tables do not hold .*\(last rows: user 5, item 8\)"):
        warm_up(session, two_id_signature(6, 9), [1])


def test_failed_run_raises_without_logging(capfd: pytest.CaptureFixture[str]) -> None:
    session = Runtime(model_bytes(n_items=5)[0])
    with pytest.raises(Exception, match="out of data bounds"):
        session.run({"user": np.array([0]), "item": np.array([7])})
    assert "Gather" not in capfd.readouterr().err


# -- IOBinding and padding (the GPU's defaults, switched on here on the CPU) ---------------------


class ShapeRecorder:
    """Stands in for the session: records the row count of every run, then runs it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.rows: list[int] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray], options: Any) -> Any:
        self.rows.append(len(next(iter(feeds.values()))))
        return self.session.run(names, feeds, options)


def test_binding_and_padding_are_off_on_the_cpu_by_default() -> None:
    session = Runtime(model_bytes()[0])
    assert (session.bind_io, session.pad_rows) == (False, False)


@pytest.mark.parametrize("n", [1, 5, 63, 64, 65, 130])
@pytest.mark.parametrize(("bind_io", "pad_rows"), [(True, False), (False, True), (True, True)])
def test_bound_and_padded_runs_equal_plain_runs(n: int, bind_io: bool, pad_rows: bool) -> None:
    data, params = model_bytes(n_users=40, n_items=30)
    rng = np.random.default_rng(n)
    feeds = {"user": rng.integers(0, 40, n), "item": rng.integers(0, 30, n)}
    plain = Runtime(data).run(feeds)["score"]
    other = Runtime(data, bind_io=bind_io, pad_rows=pad_rows).run(feeds)["score"]
    assert other.shape == (n,) and other.dtype == np.float32
    np.testing.assert_array_equal(other, plain)
    np.testing.assert_allclose(
        other, reference_scores(params, feeds["user"], feeds["item"]), atol=1e-6
    )


def test_padding_runs_powers_of_two_from_64() -> None:
    session = Runtime(model_bytes()[0], pad_rows=True)
    recorder = ShapeRecorder(session._session)
    session._session = recorder
    for n in (1, 64, 65, 200):
        session.run({"user": np.zeros(n, dtype=np.int64), "item": np.ones(n, dtype=np.int64)})
    assert recorder.rows == [64, 64, 128, 256]


def test_bucket_rows_covers_each_size_with_less_than_twice_its_rows() -> None:
    for n in range(1, 5000):
        bucket = runtime.bucket_rows(n)
        assert bucket >= max(n, 64) and bucket & (bucket - 1) == 0
        assert bucket < 2 * max(n, 64)
    assert runtime.bucket_sizes(8192) == [64, 128, 256, 512, 1024, 2048, 4096, 8192]
    assert runtime.bucket_sizes(1) == [64]


def test_padded_warmup_runs_every_bucket_up_to_the_largest_batch() -> None:
    session = Runtime(model_bytes(n_users=6, n_items=5)[0], pad_rows=True)
    recorder = ShapeRecorder(session._session)
    session._session = recorder
    warm_up(session, TWO_IDS, [1], largest=300)
    assert {64, 128, 256, 512} <= set(recorder.rows)
    assert all(rows & (rows - 1) == 0 and rows >= 64 for rows in recorder.rows)
