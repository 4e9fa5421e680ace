"""A small feature model without training: a hand-built ONNX graph over a user id, an item id, a
user categorical (occupation), a user numeric (age, standardised), a user multi-hot (favourite
genres), an item multi-hot (genres), both mean-pooled, and a context categorical (device),
published with its feature tables and vocabularies through the repository contract, plus the
NumPy scorer it must agree with.

    score = <user_emb[user] + occupation_emb[occupation] + age * age_vec + device_emb[device]
             + mean of genre_emb over the user's favourite genres,
             item_emb[item] + mean of genre_emb over the item's genres>

Every feature meets the item in the dot product, so each one changes the ranking. With
``attributes=True`` the items also have a brand (categorical) and a year (numeric, standardised),
added to the item side (``+ brand_emb[brand] + year * year_vec``): attributes to filter by.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from modelrepo import (
    ITEM_FEATURES_FILE,
    USER_FEATURES_FILE,
    InputSpec,
    Manifest,
    OutputSpec,
    PublishedVersion,
    RetrievalVectors,
    Role,
    Signature,
    Source,
    Vocabulary,
    write_version,
)
from modelrepo.layout import ITEMS_FILE, USERS_FILE

DIM, BAG = 4, 3
AGE_MEAN, AGE_STD = 35.0, 10.0
OCCUPATIONS = ["artist", "doctor", "engineer", "student"]
GENRES = ["action", "comedy", "drama", "horror", "noir", "western"]
DEVICES = ["desktop", "mobile", "tv"]
BRANDS = ["acme", "globex", "initech", "umbrella"]
YEAR_MEAN, YEAR_STD, YEARS = 1990.0, 8.0, (1970, 2010)


@dataclass
class FeatureModel:
    """What a published feature-model version holds, for computing its scores independently."""

    published: PublishedVersion
    weights: dict[str, np.ndarray]
    users: Vocabulary
    items: Vocabulary
    occupations: Vocabulary
    genres: Vocabulary
    devices: Vocabulary
    user_table: dict[str, np.ndarray]  # by input name, rows of ``users``
    item_table: dict[str, np.ndarray]  # by input name, rows of ``items``
    years: np.ndarray | None = None  # attributes=True: each item row's raw year (row 0: none)

    def scores(
        self,
        user_row: int,
        item_rows: np.ndarray,
        device: str,
        occupation: str | None = None,
        age: float | None = None,
        favourites: list[str] | None = None,
    ) -> np.ndarray:
        """The score of one user against ``item_rows``: the user's features from the user table,
        unless given raw here (``occupation`` and ``favourites`` through their vocabulary, ``age``
        standardised)."""
        w = self.weights
        favourite_rows = (
            self.user_table["user_favourites"][user_row]
            if favourites is None
            else np.array([self.genres.row(g) for g in favourites], dtype=np.int64)
        )
        occupation_row = (
            self.user_table["user_occupation"][user_row]
            if occupation is None
            else self.occupations.row(occupation)
        )
        age_std = (
            float(self.user_table["user_age"][user_row, 0])
            if age is None
            else (age - AGE_MEAN) / AGE_STD
        )
        user_vec = (
            w["user_emb"][user_row].astype(np.float64)
            + w["occupation_emb"][occupation_row]
            + age_std * w["age_vec"][0]
            + w["device_emb"][self.devices.row(device)]
            + self._bag_mean(favourite_rows[np.newaxis])[0]
        )
        item_vec = w["item_emb"][item_rows] + self._bag_mean(
            self.item_table["item_genres"][item_rows]
        )
        if "item_brand" in self.item_table:
            item_vec = item_vec + w["brand_emb"][self.item_table["item_brand"][item_rows]]
            item_vec = item_vec + self.item_table["item_year"][item_rows] @ w["year_vec"]
        result: np.ndarray = item_vec @ user_vec
        return result

    def _bag_mean(self, bags: np.ndarray) -> np.ndarray:
        """The mean genre embedding of each bag's non-zero entries (zero for an empty bag)."""
        counts = np.maximum((bags > 0).sum(axis=1, keepdims=True), 1)
        total: np.ndarray = self.weights["genre_emb"][bags].astype(np.float64).sum(axis=1)
        return total / counts

    def ranking(self, scores: np.ndarray, item_rows: np.ndarray, k: int) -> list[str]:
        """The ids of the best ``k`` of ``item_rows`` by ``scores``, ties broken by id."""
        ids = self.items.ids_of_rows(item_rows)
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
        return [ids[i] for i in order[:k]]


def _signature(n_users: int, n_items: int, attributes: bool = False) -> Signature:
    def ids(name: str, source: Source, n_rows: int, vocabulary: str, **more: object) -> InputSpec:
        return InputSpec.model_validate(
            {"name": name, "role": Role.ID, "source": source, "dtype": "INT64", "shape": (-1,),
             "n_rows": n_rows, "vocabulary": vocabulary, **more}
        )  # fmt: skip

    return Signature(
        inputs=(
            ids("user", Source.USER, n_users + 1, USERS_FILE),
            ids("item", Source.ITEM, n_items + 1, ITEMS_FILE),
            ids("user_occupation", Source.USER_TABLE, len(OCCUPATIONS) + 1,
                "vocab_user_occupation.txt", table=USER_FEATURES_FILE, feature="occupation"),
            InputSpec(name="user_age", role=Role.DENSE, source=Source.USER_TABLE, dtype="FP32",
                      shape=(-1, 1), table=USER_FEATURES_FILE, feature="age",
                      mean=(AGE_MEAN,), std=(AGE_STD,)),
            InputSpec(name="item_genres", role=Role.MULTI_HOT, source=Source.ITEM_TABLE,
                      dtype="INT64", shape=(-1, BAG), n_rows=len(GENRES) + 1,
                      vocabulary="vocab_item_genres.txt", table=ITEM_FEATURES_FILE,
                      feature="genres"),
            InputSpec(name="user_favourites", role=Role.MULTI_HOT, source=Source.USER_TABLE,
                      dtype="INT64", shape=(-1, BAG), n_rows=len(GENRES) + 1,
                      vocabulary="vocab_user_favourites.txt", table=USER_FEATURES_FILE,
                      feature="favourites"),
            ids("context_device", Source.CONTEXT, len(DEVICES) + 1, "vocab_context_device.txt",
                feature="device"),
            *(_attribute_inputs() if attributes else ()),
        ),
        outputs=(OutputSpec(name="score", dtype="FP32", shape=(-1,)),),
        score="score",
    )  # fmt: skip


def _attribute_inputs() -> tuple[InputSpec, ...]:
    """The item brand (categorical) and year (numeric) of ``attributes=True``."""
    return (
        InputSpec(name="item_brand", role=Role.ID, source=Source.ITEM_TABLE, dtype="INT64",
                  shape=(-1,), n_rows=len(BRANDS) + 1, vocabulary="vocab_item_brand.txt",
                  table=ITEM_FEATURES_FILE, feature="brand"),
        InputSpec(name="item_year", role=Role.DENSE, source=Source.ITEM_TABLE, dtype="FP32",
                  shape=(-1, 1), table=ITEM_FEATURES_FILE, feature="year",
                  mean=(YEAR_MEAN,), std=(YEAR_STD,)),
    )  # fmt: skip


def _bag_mean(bag: str) -> list[NodeProto]:
    """Nodes computing ``<bag>_mean``: the mean of genre_emb over the bag's non-zero entries
    (genre_emb[0] = 0, so the padding adds nothing; an empty bag gives zeros)."""
    node = helper.make_node
    return [
        node("Gather", ["genre_emb", bag], [f"{bag}_emb"]),
        node("ReduceSum", [f"{bag}_emb", "axis"], [f"{bag}_sum"], keepdims=0),
        node("Greater", [bag, "zero"], [f"{bag}_present"]),
        node("Cast", [f"{bag}_present"], [f"{bag}_present_f"], to=TensorProto.FLOAT),
        node("ReduceSum", [f"{bag}_present_f", "axis"], [f"{bag}_count"], keepdims=1),
        node("Max", [f"{bag}_count", "one"], [f"{bag}_count1"]),
        node("Div", [f"{bag}_sum", f"{bag}_count1"], [f"{bag}_mean"]),
    ]


def _graph(weights: dict[str, np.ndarray]) -> bytes:
    node = helper.make_node
    attributes = "brand_emb" in weights
    nodes = [
        node("Gather", ["user_emb", "user"], ["u"]),
        node("Gather", ["occupation_emb", "user_occupation"], ["occ"]),
        node("MatMul", ["user_age", "age_vec"], ["age"]),
        node("Gather", ["device_emb", "context_device"], ["dev"]),
        node("Add", ["u", "occ"], ["u1"]),
        node("Add", ["u1", "age"], ["u2"]),
        node("Add", ["u2", "dev"], ["u3"]),
        *_bag_mean("user_favourites"),
        node("Add", ["u3", "user_favourites_mean"], ["user_vec"]),
        node("Gather", ["item_emb", "item"], ["it"]),
        *_bag_mean("item_genres"),
        node("Add", ["it", "item_genres_mean"], ["item_vec0" if attributes else "item_vec"]),
        *(
            [
                node("Gather", ["brand_emb", "item_brand"], ["brand"]),
                node("MatMul", ["item_year", "year_vec"], ["year"]),
                node("Add", ["item_vec0", "brand"], ["item_vec1"]),
                node("Add", ["item_vec1", "year"], ["item_vec"]),
            ]
            if attributes
            else []
        ),
        node("Mul", ["user_vec", "item_vec"], ["product"]),
        node("ReduceSum", ["product", "axis"], ["score"], keepdims=0),
    ]
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    initializers += [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    inputs = [
        helper.make_tensor_value_info("user", TensorProto.INT64, ["n"]),
        helper.make_tensor_value_info("item", TensorProto.INT64, ["n"]),
        helper.make_tensor_value_info("user_occupation", TensorProto.INT64, ["n"]),
        helper.make_tensor_value_info("user_age", TensorProto.FLOAT, ["n", 1]),
        helper.make_tensor_value_info("user_favourites", TensorProto.INT64, ["n", BAG]),
        helper.make_tensor_value_info("item_genres", TensorProto.INT64, ["n", BAG]),
        helper.make_tensor_value_info("context_device", TensorProto.INT64, ["n"]),
    ]
    if attributes:
        inputs += [
            helper.make_tensor_value_info("item_brand", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("item_year", TensorProto.FLOAT, ["n", 1]),
        ]
    output = helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n"])
    graph = helper.make_graph(nodes, "feature_model", inputs, [output], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model.SerializeToString()


def publish_feature_model(
    repository: Path,
    name: str = "features",
    n_users: int = 12,
    n_items: int = 30,
    seed: int = 5,
    attributes: bool = False,
    retrieval: RetrievalVectors | None = None,
) -> FeatureModel:
    """Publish a feature-model version of ``name``: graph, tables and vocabularies (with
    ``attributes``, the items' brand and year too; with ``retrieval``, those vectors)."""
    rng = np.random.default_rng(seed)

    def emb(rows: int) -> np.ndarray:
        return rng.normal(0, 1.0, (rows, DIM)).astype(np.float32)

    weights = {
        "user_emb": emb(n_users + 1),
        "item_emb": emb(n_items + 1),
        "occupation_emb": emb(len(OCCUPATIONS) + 1),
        "age_vec": emb(1),
        "device_emb": emb(len(DEVICES) + 1),
        "genre_emb": emb(len(GENRES) + 1),
    }
    weights["genre_emb"][0] = 0.0
    user_table = {
        "user_occupation": rng.integers(1, len(OCCUPATIONS) + 1, n_users + 1),
        "user_age": ((rng.uniform(18, 70, (n_users + 1, 1)) - AGE_MEAN) / AGE_STD),
        "user_favourites": _bags(rng, n_users + 1),
    }
    item_table = {"item_genres": _bags(rng, n_items + 1)}
    for table in (user_table, item_table):
        for column in table.values():
            column[0] = 0  # row 0, the unknown id: the defaults
    user_table["user_age"] = user_table["user_age"].astype(np.float32)
    years = None
    if attributes:  # drawn last: the model without attributes stays the same
        weights["brand_emb"], weights["year_vec"] = emb(len(BRANDS) + 1), emb(1)
        years = rng.integers(YEARS[0], YEARS[1] + 1, n_items + 1)
        item_table["item_brand"] = rng.integers(1, len(BRANDS) + 1, n_items + 1)
        item_table["item_year"] = ((years - YEAR_MEAN) / YEAR_STD).astype(np.float32)[:, None]
        item_table["item_brand"][0], item_table["item_year"][0] = 0, 0.0
    vocabularies = {
        USERS_FILE: Vocabulary([f"u{i}" for i in range(1, n_users + 1)]),
        ITEMS_FILE: Vocabulary([f"i{i}" for i in range(1, n_items + 1)]),
        "vocab_user_occupation.txt": Vocabulary(OCCUPATIONS),
        "vocab_user_favourites.txt": Vocabulary(GENRES),
        "vocab_item_genres.txt": Vocabulary(GENRES),
        "vocab_context_device.txt": Vocabulary(DEVICES),
        **({"vocab_item_brand.txt": Vocabulary(BRANDS)} if attributes else {}),
    }
    published = write_version(
        repository,
        name,
        Manifest(kind="features", signature=_signature(n_users, n_items, attributes)),
        _graph(weights),
        vocabularies,
        tables={USER_FEATURES_FILE: user_table, ITEM_FEATURES_FILE: item_table},
        retrieval=retrieval,
    )
    return FeatureModel(
        published,
        weights,
        users=vocabularies[USERS_FILE],
        items=vocabularies[ITEMS_FILE],
        occupations=vocabularies["vocab_user_occupation.txt"],
        genres=vocabularies["vocab_item_genres.txt"],
        devices=vocabularies["vocab_context_device.txt"],
        user_table=user_table,
        item_table=item_table,
        years=years,
    )


def _bags(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Bags of up to ``BAG`` genres padded with 0, each holding at least one genre."""
    bags = rng.integers(0, len(GENRES) + 1, (rows, BAG))
    bags[:, 0] = rng.integers(1, len(GENRES) + 1, rows)
    return bags.astype(np.int64)
