"""``recserve import`` end to end: a PyTorch-exported NCF model served with PyTorch's scores, and a
clear one-line error (exit 2) for every file or mapping that cannot be served.

``tests/fixtures/torch_ncf.onnx`` and PyTorch's scores beside it are written by
``tests/fixtures/make_torch_ncf.py`` (which needs torch; the tests do not).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto

from modelrepo import Signature, read_version
from recserve.cli import main
from tests.import_graphs import (
    FEATURE_SIGNATURE,
    changed,
    dot_model,
    feature_model,
    run,
    shifted_id_model,
)
from tests.server_process import ServerProcess, start_server
from training.import_check import weights

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
    for rows in FEATURE_GRAPHS:
        signature = ids / "signature.json"
        signature.write_text(FEATURE_SIGNATURE.model_dump_json())
        model = feature_model(rows=rows).save(ids / "features.onnx")
        flags = ("--signature", str(signature), "--input", "user=uid", "--output", "score=out")
        assert import_(model, root, *flags, model=f"features-{rows or 'weights'}") == 0
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


FEATURE_GRAPHS = (None, 3)  # the bag as float weights, and as 3 rows


@pytest.mark.parametrize("rows", FEATURE_GRAPHS)
def test_v2_infer_of_an_imported_feature_model_equals_the_original(
    client: httpx.Client, rows: int | None
) -> None:
    users = np.array([1, 2, 3, 4, 5, 0], np.int64)  # row r + 1: the graph's user r; 0: unknown
    age = np.random.default_rng(1).normal(size=(6, 2)).astype(np.float32)
    bags = np.array([[0, 0, 0], [2, 0, 0], [1, 1, 3], [4, 2, 4], [0, 3, 0], [0, 0, 0]], np.int64)
    inputs = [
        {"name": "user", "datatype": "INT64", "shape": [6], "data": users.tolist()},
        {"name": "age", "datatype": "FP32", "shape": [6, 2], "data": age.ravel().tolist()},
        {"name": "genres", "datatype": "INT64", "shape": [6, 3], "data": bags.ravel().tolist()},
    ]
    reply = client.post(f"/v2/models/features-{rows or 'weights'}/infer", json={"inputs": inputs})
    assert reply.status_code == 200, reply.text
    scores = np.array(reply.json()["outputs"][0]["data"], np.float32)
    theirs = bags if rows else weights(bags, 5)  # genre rows 1..4 as the graph's 4 weights
    original = feature_model(rows=rows).model()
    expected = run(original, {"uid": users[:5] - 1, "age": age[:5], "genres": theirs[:5]}, "out")
    np.testing.assert_array_equal(scores[:5], expected[:, 0])
    assert np.isfinite(scores[5])


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


def refused(err: str, message: str, repository: Path) -> None:
    """The import said ``message`` on one ``error:`` line and published nothing."""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not repository.exists()


def import_features(
    tmp_path: Path, signature: Signature, *flags: str, rows: int | None = None
) -> int:
    """Import :func:`feature_model` (its bag as weights, or as ``rows`` rows) under
    ``signature``, its user input mapped, into ``tmp_path / "repo"``."""
    model = feature_model(rows=rows).save(tmp_path / "features.onnx")
    (tmp_path / "signature.json").write_text(signature.model_dump_json())
    mapping = ("--input", "user=uid", "--output", "score=out")
    return import_(model, tmp_path / "repo", "--signature", str(tmp_path / "signature.json"),
                   *mapping, *flags)  # fmt: skip


def test_a_feature_model_is_imported_with_its_signature_file(tmp_path: Path) -> None:
    genres = write_ids(tmp_path / "genres", ["drama", "comedy", "horror", "noir"])
    assert import_features(tmp_path, FEATURE_SIGNATURE, "--vocabulary", f"genres.txt={genres}") == 0
    stored = read_version(tmp_path / "repo" / "ncf" / "1")
    assert stored.manifest.signature == FEATURE_SIGNATURE
    assert stored.vocabularies["genres.txt"].row("noir") == 4
    assert stored.vocabularies["users.txt"].ids == ["0", "1", "2", "3", "4"]
    assert stored.tables == {}
    adaptations = stored.manifest.records()["adaptations"]
    assert (
        "input 'genres' feeds graph input 'genres' as 0/1 weights (padding and unknown rows "
        "weigh 0)" in adaptations
    )


USER_GENRES = changed(FEATURE_SIGNATURE, "genres", source="user_table", table="user_features.npz")
TABLE = np.array([[0, 0, 0], [1, 2, 0], [4, 4, 0], [0, 0, 0], [3, 1, 2], [2, 0, 0]], np.int64)


def write_table(path: Path, genres: np.ndarray) -> str:
    """A user table as NumPy writes one; the ``--table`` flag that gives it."""
    np.savez(path, genres=genres)
    return f"user_features.npz={path}"


def test_a_graph_taking_rows_is_published_with_its_feature_table(tmp_path: Path) -> None:
    table = write_table(tmp_path / "users.npz", genres=TABLE)
    assert import_features(tmp_path, USER_GENRES, "--table", table, rows=3) == 0
    stored = read_version(tmp_path / "repo" / "ncf" / "1")
    assert stored.manifest.signature == USER_GENRES
    np.testing.assert_array_equal(stored.tables["user_features.npz"]["genres"], TABLE)
    adaptations = stored.manifest.records()["adaptations"]
    assert "input 'genres' feeds graph input 'genres' as its rows" in adaptations


FEATURE_ERRORS: list[tuple[str, Signature, int | None, Any, str]] = [
    (
        "no table",
        USER_GENRES, 3, lambda d: [],
        "--table: the signature looks its features up in ['user_features.npz'], each given once "
        "as --table FILE_NAME=FILE.npz; given []",
    ),
    (
        "table of the wrong shape",
        USER_GENRES, 3, lambda d: ["--table", write_table(d / "t.npz", genres=TABLE[:, :2])],
        "user_features.npz: 'genres' is int64[6, 2], the signature needs int64[6, 3]",
    ),
    (
        "table that is no npz",
        USER_GENRES, 3, lambda d: ["--table", f"user_features.npz={write_ids(d / 't', ['x'])}"],
        "/t: not a NumPy .npz file",
    ),
    (
        "table for a signature without one",
        FEATURE_SIGNATURE, None, lambda d: ["--table", write_table(d / "t.npz", genres=TABLE)],
        "--table: the signature looks its features up in [], each given once",
    ),
    (
        "more genres than the graph's table rows",
        changed(FEATURE_SIGNATURE, "genres", n_rows=7), 3, lambda d: [],
        "signature input 'genres' has n_rows 7 (padding row 0 and 6 categories), but the tables "
        "graph input 'genres' indexes have 5 rows",
    ),
    (
        "weights for other genres",
        changed(FEATURE_SIGNATURE, "genres", n_rows=7), None, lambda d: [],
        "graph input 'genres' is FP32 [N, 4], but signature input 'genres' (multi_hot) needs "
        "FP32 [N, 6] (one weight per category of its 6, no column for the unknown row 0) or "
        "INT64 or INT32 [N, 3] (rows padded with 0)",
    ),
]  # fmt: skip


def test_a_signature_with_more_ids_than_table_rows_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signature = changed(FEATURE_SIGNATURE, "user", n_rows=9)  # the graph's user table has 5 rows
    assert import_features(tmp_path, signature) == 2
    assert capsys.readouterr().err == (
        "error: signature input 'user' has n_rows 9 (8 ids), but the tables graph input 'uid' "
        "indexes have 5 rows\n"
    )


@pytest.mark.parametrize(
    ("signature", "rows", "flags", "message"),
    [e[1:] for e in FEATURE_ERRORS],
    ids=[e[0] for e in FEATURE_ERRORS],
)
def test_feature_model_errors_are_one_line_naming_the_input(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    signature: Signature,
    rows: int | None,
    flags: Any,
    message: str,
) -> None:
    assert import_features(tmp_path, signature, *flags(tmp_path), rows=rows) == 2
    refused(capsys.readouterr().err, message, tmp_path / "repo")


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
    refused(capsys.readouterr().err, message, tmp_path / "repo")


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
