"""``recserve import`` end to end: a PyTorch-exported NCF model served with PyTorch's scores, and a
clear one-line error (exit 2) for every file or mapping that cannot be served.

``tests/fixtures/torch_ncf.onnx`` and PyTorch's scores beside it are written by
``tests/fixtures/make_torch_ncf.py`` (which needs torch; the tests do not).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from modelrepo import read_version
from recserve.cli import main
from tests.import_graphs import FEATURE_SIGNATURE, dot_model, feature_model, shifted_id_model
from tests.server_process import ServerProcess, start_server

FIXTURES = Path(__file__).resolve().parent / "fixtures"
TORCH_MODEL = FIXTURES / "torch_ncf.onnx"
TORCH = np.load(FIXTURES / "torch_ncf_scores.npz")
MAPPING = ("--input", "user=user_id", "--input", "item=item_id", "--output", "score=prob")


def import_(path: Path, repository: Path, *flags: str, model: str = "ncf") -> int:
    return main(["import", str(path), "--model", model, "--repository", str(repository), *flags])


def write_ids(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    ids = tmp_path_factory.mktemp("ids")
    users = write_ids(ids / "users.txt", [f"user-{u}" for u in range(int(TORCH["n_users"]))])
    items = write_ids(ids / "items.txt", [f"item-{i}" for i in range(int(TORCH["n_items"]))])
    assert import_(TORCH_MODEL, root, *MAPPING) == 0  # ids: the row numbers
    named = ("--users", str(users), "--items", str(items))
    assert import_(TORCH_MODEL, root, *MAPPING, *named, model="ncf-named") == 0
    return root


@pytest.fixture(scope="module")
def client(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    log = tmp_path_factory.mktemp("log") / "server.log"
    server: ServerProcess = start_server(repository, log)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            yield http
    finally:
        assert server.stop() == 0


def served_scores(client: httpx.Client, model: str, prefix: tuple[str, str]) -> np.ndarray:
    """/v1 score of every sampled (user, item) pair, one request per user."""
    scores = np.zeros(len(TORCH["scores"]), np.float32)
    for user in np.unique(TORCH["users"]):
        at = np.flatnonzero(TORCH["users"] == user)
        body = {
            "user_id": f"{prefix[0]}{user}",
            "item_ids": [f"{prefix[1]}{item}" for item in TORCH["items"][at]],
        }
        reply = client.post(f"/v1/models/{model}/score", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["unknown"] == {"user_id": False, "item_ids": []}
        scores[at] = reply.json()["scores"]
    return scores


@pytest.mark.parametrize(
    ("model", "prefix"), [("ncf", ("", "")), ("ncf-named", ("user-", "item-"))]
)
def test_v1_scores_equal_pytorchs(
    client: httpx.Client, model: str, prefix: tuple[str, str]
) -> None:
    np.testing.assert_allclose(served_scores(client, model, prefix), TORCH["scores"], rtol=1e-5)


def test_v2_infer_scores_equal_pytorchs(client: httpx.Client) -> None:
    n = len(TORCH["scores"])
    inputs = [  # vocabulary line r is row r + 1
        {"name": name, "datatype": "INT64", "shape": [n], "data": (TORCH[key] + 1).tolist()}
        for name, key in (("user", "users"), ("item", "items"))
    ]
    reply = client.post("/v2/models/ncf/infer", json={"inputs": inputs})
    assert reply.status_code == 200, reply.text
    (output,) = reply.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("score", "FP32", [n])
    np.testing.assert_allclose(output["data"], TORCH["scores"], rtol=1e-5)


def test_unknown_ids_are_scored_not_refused(client: httpx.Client) -> None:
    body = {"user_id": "nobody", "item_ids": ["3", "no-such-item"]}
    reply = client.post("/v1/models/ncf/score", json=body)
    assert reply.status_code == 200, reply.text
    got = reply.json()
    assert got["unknown"] == {"user_id": True, "item_ids": ["no-such-item"]}
    assert all(0.0 < s < 1.0 for s in got["scores"])
    top = client.post("/v1/models/ncf/recommend", json={"user_id": "nobody", "k": 3})
    assert top.status_code == 200 and len(top.json()["items"]) == 3


def test_the_manifest_records_the_source_the_mapping_and_the_parity(repository: Path) -> None:
    stored = read_version(repository / "ncf" / "1")
    records = stored.manifest.records()
    assert stored.manifest.kind == "imported"
    assert records["source"]["file"] == "torch_ncf.onnx"
    assert records["source"]["producer"].startswith("pytorch")
    assert records["mapping"] == {
        "inputs": {"user": "user_id", "item": "item_id"},
        "outputs": {"score": "prob"},
    }
    assert 0.0 <= records["parity_max_abs_error"] <= 1e-5
    assert stored.vocabularies["users.txt"].ids == [str(u) for u in range(int(TORCH["n_users"]))]
    assert read_version(repository / "ncf-named" / "1").vocabularies["items.txt"].ids[:2] == [
        "item-0",
        "item-1",
    ]


def test_a_feature_model_is_imported_with_its_signature_file(tmp_path: Path) -> None:
    model = feature_model().save(tmp_path / "features.onnx")
    signature = tmp_path / "signature.json"
    signature.write_text(FEATURE_SIGNATURE.model_dump_json())
    genres = write_ids(tmp_path / "genres", ["drama", "comedy", "horror", "noir"])
    flags = ("--signature", str(signature), "--input", "user=uid", "--vocabulary",
             f"genres.txt={genres}", "--output", "score=out")  # fmt: skip
    assert import_(model, tmp_path / "repo", *flags) == 0
    stored = read_version(tmp_path / "repo" / "ncf" / "1")
    assert stored.manifest.signature == FEATURE_SIGNATURE
    assert stored.vocabularies["genres.txt"].row("noir") == 4
    assert stored.vocabularies["users.txt"].ids == ["0", "1", "2", "3", "4"]


def test_a_signature_with_more_ids_than_table_rows_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = feature_model().save(tmp_path / "features.onnx")
    raw = FEATURE_SIGNATURE.model_dump(mode="json")
    raw["inputs"][0]["n_rows"] = 9  # the graph's user table has 5 rows
    (tmp_path / "signature.json").write_text(json.dumps(raw))
    flags = ("--signature", str(tmp_path / "signature.json"), "--input", "user=uid")
    assert import_(model, tmp_path / "repo", *flags, "--output", "score=out") == 2
    assert capsys.readouterr().err == (
        "error: signature input 'user' has n_rows 9 (8 ids), but the tables graph input 'uid' "
        "indexes have 5 rows\n"
    )


def test_a_parity_failure_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("training.import_cli.parity", lambda *a, **k: 0.25)
    assert import_(TORCH_MODEL, tmp_path / "repo", *MAPPING) == 3
    assert "differs from the original by 0.25" in capsys.readouterr().err
    assert not (tmp_path / "repo" / "ncf" / "1").exists()


def save(tmp_path: Path, **kwargs: Any) -> Path:
    return dot_model(**kwargs).save(tmp_path / "model.onnx")


def with_age(tmp_path: Path) -> Path:
    """A graph with an input that the two-id signature has no place for."""
    g = dot_model()
    g.take("age", TensorProto.FLOAT, ["batch", 2])
    return g.save(tmp_path / "model.onnx")


def float_ids(tmp_path: Path) -> Path:
    """A graph whose id input is declared FP32 (retyped after building: Gather refuses it)."""
    model = dot_model(user="user", item="item").model()
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.save(model, str(tmp_path / "model.onnx"))
    return tmp_path / "model.onnx"


ERRORS: list[tuple[str, Any, list[str], str]] = [
    ("missing file", lambda d: d / "nope.onnx", [], "cannot read"),
    ("not onnx", lambda d: write_ids(d / "x.onnx", ["hello"]), [], "is not an ONNX model"),
    ("directory", lambda d: d, [], "cannot read"),
    (
        "unmapped graph input",
        lambda d: with_age(d),
        ["--input", "user=user_id", "--input", "item=item_id"],
        "graph input 'age' (FP32 [N, 2]) is not mapped: the signature takes ['user', 'item']",
    ),
    (
        "missing mapping",
        lambda d: save(d),
        ["--input", "user=user_id"],
        "signature input 'item' is not mapped: pass --input item=TENSOR with TENSOR one of the "
        "graph's inputs ['user_id', 'item_id']",
    ),
    (
        "no such graph input",
        lambda d: save(d),
        ["--input", "user=uid", "--input", "item=item_id"],
        "--input user=uid: the graph has no input 'uid' (its inputs: ['user_id', 'item_id'])",
    ),
    (
        "no such signature input",
        lambda d: save(d),
        ["--input", "age=user_id"],
        "--input age=user_id: the signature has no input 'age'",
    ),
    (
        "float ids",
        lambda d: float_ids(d),
        [],
        "graph input 'user' is FP32 [N], but signature input 'user' (id) needs INT64 or INT32 [N]",
    ),
    (
        "fixed batch",
        lambda d: save(d, batch=4, user="user", item="item"),
        [],
        "graph input 'user' is INT64 [4], but signature input 'user' (id) needs INT64 or INT32 "
        "[N]; export it with a dynamic batch axis",
    ),
    (
        "no such graph output",
        lambda d: save(d, user="user", item="item", output="probability"),
        ["--output", "score=eu"],
        "--output score=eu: the graph has no output 'eu' (its outputs: ['probability'])",
    ),
    (
        "more users than rows",
        lambda d: save(d, user="user", item="item"),
        ["--n-users", "9"],
        "--n-users is 9, but the tables graph input 'user' indexes have 6 rows",
    ),
    (
        "rows unknowable",
        lambda d: shifted_id_model().save(d / "m.onnx"),
        ["--input", "user=user_id", "--input", "item=item_id"],
        "cannot tell how many users the graph knows: graph input 'user_id' does not only index "
        "embedding tables; pass --users FILE or --n-users N",
    ),
    (
        "duplicate id",
        lambda d: save(d, user="user", item="item"),
        ["--users", "{dir}/dup.txt"],
        "duplicate id 'a' in vocabulary",
    ),
    (
        "bad signature file",
        lambda d: save(d),
        ["--signature", "{dir}/dup.txt"],
        "--signature",
    ),
]


@pytest.mark.parametrize(
    ("make", "flags", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_errors_are_one_line_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, flags: list[str], message: str
) -> None:
    write_ids(tmp_path / "dup.txt", ["a", "b", "a"])
    path = make(tmp_path)
    flags = [flag.format(dir=tmp_path) for flag in flags]
    assert import_(path, tmp_path / "repo", *flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "repo").exists()


def test_an_output_of_another_shape_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = dot_model(user="user", item="item", output="prob")
    g.give("product", ["batch", 3])
    g.outputs.pop(0)
    assert import_(g.save(tmp_path / "m.onnx"), tmp_path / "repo") == 2
    err = capsys.readouterr().err
    assert "graph output 'product' is FP32 [N, 3], but signature output 'score' is FP32 [N]" in err
    assert not (tmp_path / "repo").exists()
