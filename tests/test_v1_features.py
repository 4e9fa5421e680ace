"""A feature model served end to end: ``/v1`` fills its side inputs from the version's feature
tables and the request's ``user_features`` and ``context``; V2 takes every tensor as sent.

Against a real server: rankings and scores equal a brute-force NumPy ranking with the features the
server should have used; every bad feature value is refused 400 naming its field while good
requests sent with it are answered as if it had not been; unknown categorical values are counted
by feature; tritonclient gets what ONNX Runtime gives directly. In process: the catalog's item
feature tensors are built once per version.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from modelrepo import InputSpec, Role, Source, Vocabulary
from service.errors import InvalidInput
from service.v1.feature_values import Encoded, encode_value
from service.v1.recommend import feeding_of, recommend, score
from service.v1.schemas import RecommendRequest, ScoreRequest
from tests.feature_factories import AGE_MEAN, AGE_STD, BAG, DEVICES, FeatureModel
from tests.feature_factories import publish_feature_model as publish
from tests.model_tools import run, serving
from tests.reliability_tools import metric_value
from tests.server_process import ServerProcess, Servers

MODEL = "features"
N_ITEMS = 30
CATALOG = np.arange(1, N_ITEMS + 1)


@dataclass
class Setup:
    server: ServerProcess
    model: FeatureModel


@pytest.fixture(scope="module")
def setup(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("features")
    model = publish(root, MODEL, n_items=N_ITEMS)
    # A batching window, so that concurrent requests share batches.
    server = module_servers.start(
        root, poll_interval_s=0, max_queue_delay_us=5000, forbidden=("Traceback",)
    )
    return Setup(server, model)


@pytest.fixture
def client(setup: Setup) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=setup.server.url, timeout=30) as c:
        yield c


def post(client: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
    # json.dumps, not httpx's encoder: it writes NaN, Infinity and integers of any size.
    return client.post(f"/v1/models/{MODEL}/{path}", content=json.dumps(body))


@dataclass
class Expected:
    """A recommendation computed by brute force: every candidate scored, ranked, ties by id."""

    ids: list[str]
    scores: np.ndarray

    @classmethod
    def of(
        cls, model: FeatureModel, user: str, ids: list[str], k: int, **features: Any
    ) -> Expected:
        rows = np.array([model.items.row(i) for i in ids])
        scores = model.scores(model.users.row(user), rows, **features)
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))[:k]
        return cls([ids[i] for i in order], scores[order])

    def check(self, answer: dict[str, Any]) -> None:
        assert [item["item_id"] for item in answer["items"]] == self.ids
        got = [item["score"] for item in answer["items"]]
        np.testing.assert_allclose(got, self.scores, rtol=1e-5, atol=1e-5)


def catalog_ids(model: FeatureModel, leave_out: tuple[str, ...] = ()) -> list[str]:
    return [i for i in model.items.ids_of_rows(CATALOG) if i not in leave_out]


# -- /v1 recommend and score ---------------------------------------------------------------------


@pytest.mark.parametrize(("user", "device"), [("u1", "desktop"), ("u7", "tv"), ("u12", "mobile")])
def test_a_known_user_is_ranked_with_the_server_side_features(
    setup: Setup, client: httpx.Client, user: str, device: str
) -> None:
    model = setup.model
    context = {"device": device}
    answer = post(client, "recommend", {"user_id": user, "k": 10, "context": context})
    assert answer.status_code == 200, answer.text
    Expected.of(model, user, catalog_ids(model), 10, device=device).check(answer.json())
    assert answer.json()["unknown"] == {"user_id": False, "item_ids": []}
    # The catalog less some items (the item features gathered for the rows left), and candidates.
    left_out = ("i2", "i5", "i29")
    body = {"user_id": user, "k": 7, "context": context, "exclude": list(left_out)}
    expected = Expected.of(model, user, catalog_ids(model, left_out), 7, device=device)
    expected.check(post(client, "recommend", body).json())
    candidates = ["i9", "i3", "nope", "i17"]  # "nope": the item table's row 0, the defaults
    body = {"user_id": user, "k": 3, "context": context, "candidates": candidates}
    Expected.of(model, user, candidates, 3, device=device).check(
        post(client, "recommend", body).json()
    )


def test_an_unknown_user_is_ranked_from_the_features_the_caller_sends(
    setup: Setup, client: httpx.Client
) -> None:
    model, ids = setup.model, catalog_ids(setup.model)
    base = {"user_id": "stranger", "k": N_ITEMS, "context": {"device": "tv"}}
    plain = post(client, "recommend", base).json()
    Expected.of(model, "stranger", ids, N_ITEMS, device="tv").check(plain)  # row 0: defaults
    assert plain["unknown"]["user_id"] is True
    sent = {"occupation": "doctor", "age": 52, "favourites": ["noir", "drama", "noir"]}
    described = post(client, "recommend", {**base, "user_features": sent}).json()
    raw = {"occupation": "doctor", "age": 52.0, "favourites": ["noir", "drama"]}
    Expected.of(model, "stranger", ids, N_ITEMS, device="tv", **raw).check(described)
    assert [item["item_id"] for item in described["items"]] != [
        item["item_id"] for item in plain["items"]
    ]
    # A known user's stored feature overridden; the others still come from the table.
    override = {"user_id": "u4", "k": 5, "context": {"device": "tv"}, "user_features": {"age": 20}}
    Expected.of(model, "u4", ids, 5, device="tv", age=20.0).check(
        post(client, "recommend", override).json()
    )


def test_score_uses_the_same_features(setup: Setup, client: httpx.Client) -> None:
    model = setup.model
    items = ["i3", "i30", "zz", "i3"]
    body = {
        "user_id": "u5",
        "item_ids": items,
        "context": {"device": "desktop"},
        "user_features": {"favourites": [], "occupation": "artist"},
    }
    answer = post(client, "score", body).json()
    rows = np.array([model.items.row(i) for i in items])
    features = {"device": "desktop", "favourites": [], "occupation": "artist"}
    expected = model.scores(model.users.row("u5"), rows, **features)
    np.testing.assert_allclose(answer["scores"], expected, rtol=1e-5, atol=1e-5)
    assert answer["unknown"] == {"user_id": False, "item_ids": ["zz"]}


# -- refusals ------------------------------------------------------------------------------------

GOOD = {"user_id": "u3", "k": 5, "context": {"device": "mobile"}}
# (the body's changes, a phrase of the refusal): each names the field and the feature.
BAD: list[tuple[dict[str, Any], str]] = [
    ({"user_features": {"height": 180}}, "user_features.height: model 'features' version 1 "
     "takes no such feature (it takes ['age', 'favourites', 'occupation'])"),
    ({"user_features": {"device": "tv"}}, "user_features.device: model 'features'"),
    ({"context": {"device": "tv", "occupation": "artist"}}, "context.occupation: model"),
    ({"context": {}}, "context.device: model 'features' version 1 needs it in every request"),
    ({"context": None}, "context.device: model"),
    ({"context": "tv"}, "context: Input should be an object"),
    ({"user_features": ["age"]}, "user_features: Input should be an object"),
    ({"context": {"device": ["tv"]}}, "context.device: a categorical feature takes a string"),
    ({"context": {"device": None}}, "context.device: a categorical feature takes a string"),
    ({"user_features": {"occupation": True}}, "user_features.occupation: a categorical"),
    ({"user_features": {"occupation": 1.5}}, "user_features.occupation: a categorical"),
    ({"user_features": {"age": "old"}}, "user_features.age: a numeric feature takes a number"),
    ({"user_features": {"age": [30]}}, "user_features.age: a numeric feature takes a number"),
    ({"user_features": {"age": True}}, "user_features.age: a numeric feature takes a number"),
    ({"user_features": {"age": float("nan")}}, "user_features.age: not a finite number"),
    ({"user_features": {"age": float("-inf")}}, "user_features.age: not a finite number"),
    ({"user_features": {"age": 10**400}}, "user_features.age: not a finite number"),
    ({"user_features": {"age": 1e40}}, "user_features.age: not a finite number"),  # in float32
    ({"user_features": {"favourites": "noir"}}, "user_features.favourites: a multi-hot feature"),
    ({"user_features": {"favourites": ["noir", {}]}}, "user_features.favourites: a multi-hot"),
    ({"user_features": {"favourites": ["noir", "drama", "comedy", "action", "noir"]}},
     f"user_features.favourites: 4 distinct values; the bag holds at most {BAG}"),
]  # fmt: skip


def test_every_bad_feature_value_is_refused_naming_its_field(
    setup: Setup, client: httpx.Client
) -> None:
    for change, phrase in BAD:
        for path, body in (
            ("recommend", {**GOOD, **change}),
            ("score", {"user_id": "u3", "item_ids": ["i1", "i2"], **change}),
        ):
            answer = post(client, path, body)
            assert answer.status_code == 400, (change, answer.text)
            error = answer.json()["error"]
            assert error.startswith(f"invalid request: {phrase}"), (change, error)


def test_bad_requests_harm_no_good_request_sent_with_them(setup: Setup) -> None:
    expected = Expected.of(setup.model, "u3", catalog_ids(setup.model), 5, device="mobile")

    async def main() -> None:
        async with httpx.AsyncClient(base_url=setup.server.url, timeout=30) as client:
            bodies = [body for change, _ in BAD for body in ({**GOOD, **change}, GOOD)]
            answers = await asyncio.gather(
                *(
                    client.post(f"/v1/models/{MODEL}/recommend", content=json.dumps(body))
                    for body in bodies
                )
            )
        for (change, phrase), bad, good in zip(BAD, answers[::2], answers[1::2], strict=True):
            assert bad.status_code == 400 and phrase in bad.json()["error"], change
            assert good.status_code == 200, good.text
            expected.check(good.json())

    asyncio.run(main())


# -- unknown values, counted ---------------------------------------------------------------------


def unknown_counts(server: ServerProcess) -> dict[str, float]:
    kinds = ("user_features:occupation", "user_features:favourites", "context:device", "user")
    return {
        kind: metric_value(server.url, "recserve_unknown_ids_total", {"model": MODEL, "kind": kind})
        for kind in kinds
    }


def test_unknown_feature_values_use_the_unknown_row_and_are_counted_by_feature(
    setup: Setup, client: httpx.Client
) -> None:
    before = unknown_counts(setup.server)
    sent = {"occupation": "astronaut", "favourites": ["noir", "zither", "kazoo"], "age": 30}
    body = {"user_id": "u2", "k": 8, "context": {"device": "fridge"}, "user_features": sent}
    answer = post(client, "recommend", body)
    assert answer.status_code == 200, answer.text
    # Unknown values weigh as row 0: the unknown occupation, device and padding in the bag.
    unknown = {"device": "fridge", "occupation": "astronaut", "favourites": ["noir"], "age": 30.0}
    Expected.of(setup.model, "u2", catalog_ids(setup.model), 8, **unknown).check(answer.json())
    # A refused request counts nothing, even its unknown values.
    refused = {**body, "user_features": {**sent, "age": "thirty"}}
    assert post(client, "recommend", refused).status_code == 400
    after = unknown_counts(setup.server)
    deltas = {kind: after[kind] - before[kind] for kind in after}
    assert deltas == {
        "user_features:occupation": 1,
        "user_features:favourites": 2,
        "context:device": 1,
        "user": 0,
    }


# -- the catalog's item features, built once -----------------------------------------------------


def test_the_catalogs_item_features_are_built_once_per_version(tmp_path: Path) -> None:
    publish(tmp_path, MODEL, n_items=N_ITEMS)

    async def main() -> None:
        async with serving(tmp_path) as (reconciler, _):
            served = reconciler.registry.get(MODEL)
            fed: list[dict[str, np.ndarray]] = []
            infer_built = served.infer_built

            async def recording(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
                fed.append(dict(inputs))
                # /v1 skips the checks of a caller's tensors: what it builds must pass them as is.
                checked, n = served._validate(inputs)
                assert n == len(inputs["item"])
                for name, value in checked.items():
                    assert value.dtype == inputs[name].dtype and value.shape == inputs[name].shape
                return await infer_built(inputs)

            served.infer_built = recording  # type: ignore[method-assign]
            for user in ("u1", "u2", "stranger"):
                body = {"user_id": user, "context": {"device": "tv"}}
                await recommend(served, RecommendRequest.model_validate(body))
            features = {"age": 30, "occupation": "artist", "favourites": ["noir"]}
            sent = {"user_id": "nobody", "context": {"device": "phone"}, "user_features": features}
            await recommend(served, RecommendRequest.model_validate(sent))
            await score(served, ScoreRequest.model_validate({**sent, "item_ids": ["i1", "zz"]}))
            fed = fed[:3]
            catalog = feeding_of(served).catalog
            genres = catalog.features["item_genres"]
            assert all(inputs["item_genres"] is genres for inputs in fed)
            assert feeding_of(served).catalog is catalog
            np.testing.assert_array_equal(
                genres, served.tables["item_features.npz"]["item_genres"][CATALOG]
            )
            # Less the excluded items, the rows left are gathered for the request.
            body = {"user_id": "u1", "context": {"device": "tv"}, "exclude": ["i1"]}
            await recommend(served, RecommendRequest.model_validate(body))
            np.testing.assert_array_equal(fed[-1]["item_genres"], genres[1:])

    run(main())


# -- what each role takes, unit by unit ----------------------------------------------------------


def test_a_numeric_feature_of_several_columns_takes_a_list_and_is_standardised() -> None:
    spec = InputSpec(
        name="user_size", role=Role.DENSE, source=Source.USER_TABLE, dtype="FP32", shape=(-1, 2),
        table="user_features.npz", feature="size", mean=(10.0, -1.0), std=(2.0, 0.5),
    )  # fmt: skip
    encoded = Encoded()
    encode_value(spec, [14, -2.5], "user_features.size", None, encoded)
    np.testing.assert_array_equal(encoded.rows["user_size"], np.array([2.0, -3.0], np.float32))
    assert encoded.rows["user_size"].dtype == np.float32
    for bad in (14, [1.0], [1.0, 2.0, 3.0], [1.0, "2"]):
        with pytest.raises(InvalidInput, match=r"user_features\.size: .* a list of 2 numbers"):
            encode_value(spec, bad, "user_features.size", None, encoded)


def test_categorical_values_take_integers_as_their_decimal_strings() -> None:
    spec = InputSpec(
        name="context_hour", role=Role.ID, source=Source.CONTEXT, dtype="INT64", shape=(-1,),
        n_rows=4, vocabulary="vocab_context_hour.txt", feature="hour",
    )  # fmt: skip
    hours = Vocabulary(["7", "12", "21"])
    for value, row in ((12, 2), (21.0, 3), ("7", 1), (8, 0)):
        encoded = Encoded()
        encode_value(spec, value, "context.hour", hours, encoded)
        assert int(encoded.rows["context_hour"]) == row
        assert encoded.unknown == ({"context:hour": 1} if row == 0 else {})


# -- V2: every tensor sent by the caller ---------------------------------------------------------


@pytest.fixture
def triton_client(setup: Setup) -> Iterator[triton.InferenceServerClient]:
    with triton.InferenceServerClient(setup.server.host_port) as c:
        yield c


def test_v2_metadata_and_config_describe_every_feature_tensor(
    triton_client: triton.InferenceServerClient,
) -> None:
    meta = triton_client.get_model_metadata(MODEL)
    by_name = {tensor["name"]: tensor for tensor in meta["inputs"]}
    assert by_name["user"] == {"name": "user", "datatype": "INT64", "shape": [-1]}
    assert by_name["user_favourites"] == {
        "name": "user_favourites",
        "datatype": "INT64",
        "shape": [-1, BAG],
        "parameters": {
            "role": "multi_hot", "source": "user_table", "feature": "favourites", "caller": "may",
        },
    }  # fmt: skip
    assert by_name["user_age"]["shape"] == [-1, 1] and by_name["user_age"]["datatype"] == "FP32"
    assert by_name["user_age"]["parameters"] == {
        "role": "dense", "source": "user_table", "feature": "age", "caller": "may",
        "mean": repr(AGE_MEAN), "std": repr(AGE_STD),
    }  # fmt: skip
    assert by_name["item_genres"]["parameters"]["caller"] == "never"
    assert by_name["context_device"]["parameters"] == {
        "role": "id", "source": "context", "feature": "device", "caller": "must",
    }  # fmt: skip
    config = triton_client.get_model_config(MODEL)
    dims = {tensor["name"]: (tensor["data_type"], tensor["dims"]) for tensor in config["input"]}
    assert dims["item_genres"] == ("TYPE_INT64", [BAG])
    assert dims["user_age"] == ("TYPE_FP32", [1])
    assert dims["context_device"] == ("TYPE_INT64", [])
    assert config["parameters"]["input.context_device.caller"] == {"string_value": "must"}
    assert config["parameters"]["input.user_age.mean"] == {"string_value": repr(AGE_MEAN)}


def feature_tensors(n: int, seed: int) -> dict[str, np.ndarray]:
    """``n`` rows of every input, drawn over each input's whole range."""
    rng = np.random.default_rng(seed)
    return {
        "user": rng.integers(0, 13, n),
        "item": rng.integers(0, N_ITEMS + 1, n),
        "user_occupation": rng.integers(0, 5, n),
        "user_age": rng.normal(size=(n, 1)).astype(np.float32),
        "user_favourites": rng.integers(0, 7, (n, BAG)),
        "item_genres": rng.integers(0, 7, (n, BAG)),
        "context_device": rng.integers(0, len(DEVICES) + 1, n),
    }


def test_v2_infer_with_every_feature_tensor_equals_onnx_runtime(
    setup: Setup, triton_client: triton.InferenceServerClient
) -> None:
    session = ort.InferenceSession(
        str(setup.model.published.path / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    for n, seed, binary in ((1, 0, True), (64, 1, True), (9, 2, False)):
        tensors = feature_tensors(n, seed)
        inputs = []
        for name, value in tensors.items():
            tensor = triton.InferInput(
                name, list(value.shape), "FP32" if name == "user_age" else "INT64"
            )
            tensor.set_data_from_numpy(value, binary_data=binary)
            inputs.append(tensor)
        result = triton_client.infer(MODEL, inputs)
        (direct,) = session.run(["score"], tensors)
        np.testing.assert_allclose(result.as_numpy("score"), direct, rtol=1e-6, atol=1e-6)
