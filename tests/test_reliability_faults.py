"""Faults in the model repository, end to end: the server keeps serving what it had, says what is
wrong (repository index, load-failure metric, log) and recovers once the repository is fixed."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from modelrepo import MANIFEST_FILE, MODEL_FILE, list_versions, read_manifest
from tests.factories import publish_random_version, random_params, reference_scores
from tests.reliability_tools import (
    binary_scores,
    infer_body,
    json_body,
    metric_value,
    random_rows,
    repository_index,
    served_versions,
    wait_until,
)
from tests.server_process import ServerProcess, Servers

TOKEN = "fault-token"
ADMIN_ENV = {"RECSERVE_ADMIN_TOKEN": TOKEN}
N_USERS, N_ITEMS = 50, 40
Params = dict[str, np.ndarray]


def _sha256_of_model(version_dir: Path, name: str = MODEL_FILE) -> None:
    """Make the manifest's checksum match the file ``name`` as it now is."""
    manifest = read_manifest(version_dir)
    digest = hashlib.sha256((version_dir / name).read_bytes()).hexdigest()
    manifest = manifest.model_copy(update={"files": {**manifest.files, name: digest}})
    (version_dir / MANIFEST_FILE).write_text(manifest.to_json())


def _truncate(version_dir: Path) -> None:
    data = (version_dir / "model.onnx").read_bytes()
    (version_dir / "model.onnx").write_bytes(data[: len(data) // 2])


def _corrupt(version_dir: Path) -> None:
    """Garbage whose checksum matches: only ONNX Runtime can tell."""
    (version_dir / "model.onnx").write_bytes(b"\x08\x0a garbage, not a protobuf" * 64)
    _sha256_of_model(version_dir)


def _drop_vocabulary(version_dir: Path) -> None:
    (version_dir / "items.txt").unlink()


def _break_contract(version_dir: Path) -> None:
    model = onnx.load(str(version_dir / "model.onnx"))
    model.graph.input[1].name = "product"
    for node in model.graph.node:
        node.input[:] = ["product" if name == "item" else name for name in node.input]
    onnx.save_model(model, str(version_dir / "model.onnx"))
    _sha256_of_model(version_dir)


def _metadata_directory(version_dir: Path) -> None:
    """metadata.json a directory: reading it fails with an OS error naming the absolute path."""
    (version_dir / MANIFEST_FILE).unlink()
    (version_dir / MANIFEST_FILE).mkdir()


def _metadata_not_json(version_dir: Path) -> None:
    (version_dir / MANIFEST_FILE).write_text('{"kind": ')


def _drop_model(version_dir: Path) -> None:
    (version_dir / MODEL_FILE).unlink()


def _short_vocabulary(version_dir: Path) -> None:
    """One item fewer than the signature's table, checksum matched: the reason tells table sizes."""
    lines = (version_dir / "items.txt").read_text().splitlines()
    (version_dir / "items.txt").write_text("\n".join(lines[:-1]) + "\n")
    _sha256_of_model(version_dir, "items.txt")


def _vocabulary_not_utf8(version_dir: Path) -> None:
    with open(version_dir / "items.txt", "ab") as handle:
        handle.write(b"\xff\xfe\n")
    _sha256_of_model(version_dir, "items.txt")


# kind -> (damage applied to a version directory, what the admin's index and the log say of it)
DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated": (_truncate, "sha256"),
    "corrupt": (_corrupt, "onnxruntime cannot load"),
    "missing-vocabulary": (_drop_vocabulary, "items.txt is missing"),
    "contract": (_break_contract, "do not match the contract"),
    "metadata-directory": (_metadata_directory, "Is a directory"),
    "metadata-not-json": (_metadata_not_json, "cannot read metadata.json"),
    "missing-model": (_drop_model, "model.onnx is missing"),
    "short-vocabulary": (_short_vocabulary, f"items.txt has {N_ITEMS - 1} ids"),
    "vocabulary-not-utf8": (_vocabulary_not_utf8, "cannot read items.txt"),
}
REPLACEABLE = ("contract", "corrupt", "missing-vocabulary", "truncated")
"""The damages an operator repairs by renaming good files over the bad ones."""


def _scratch_version(repo: Path, model: str, seed: int) -> tuple[Path, Params]:
    """A random version (``seed``) published into a scratch repository beside ``repo``."""
    published, params = publish_random_version(repo.parent / "scratch", model, seed=seed)
    return published.path, params


def _publish_damaged(
    repo: Path, model: str, seed: int, damage: Callable[[Path], None]
) -> tuple[Path, Params]:
    """Publish a version damaged before it appears: made in a scratch repository, damaged, and
    renamed into ``repo`` as the next version (as a faulty publisher would leave it)."""
    version_dir, params = _scratch_version(repo, model, seed)
    damage(version_dir)
    (repo / model).mkdir(parents=True, exist_ok=True)
    target = repo / model / str(max(list_versions(repo / model), default=0) + 1)
    os.rename(version_dir, target)
    return target, params


def _replace_files(repo: Path, version_dir: Path, seed: int) -> None:
    """Rewrite a version's files in place, each by an atomic rename (how an operator fixes it)."""
    fixed, _ = _scratch_version(repo, "fix", seed)
    for path in fixed.iterdir():
        os.replace(path, version_dir / path.name)


class Traffic:
    """Requests sent without pause from a thread; each reply must score like a known version."""

    def __init__(self, url: str, model: str) -> None:
        self.url, self.model = url, model
        self.replies: list[tuple[int, np.ndarray, np.ndarray, np.ndarray] | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                users, items = random_rows(32, N_USERS, N_ITEMS, seed=i)
                body, headers = infer_body(users, items)
                try:
                    response = client.post(
                        f"{self.url}/v2/models/{self.model}/infer", content=body, headers=headers
                    )
                except httpx.HTTPError as exc:
                    self.replies.append(repr(exc))
                    continue
                if response.status_code != 200:
                    self.replies.append(f"{response.status_code} {response.text}")
                    continue
                scores = binary_scores(response.content, response.headers)
                self.replies.append((response.status_code, users, items, scores))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def check(self, *allowed: Params) -> None:
        """Every reply was a 200 whose scores are those of one of the ``allowed`` versions."""
        failed = [r for r in self.replies if isinstance(r, str)]
        assert failed == [], failed[:3]
        assert self.replies, "no traffic"
        for reply in self.replies:
            assert not isinstance(reply, str)
            _, users, items, scores = reply
            assert any(
                np.allclose(scores, reference_scores(p, users, items), rtol=1e-4, atol=1e-5)
                for p in allowed
            )


@pytest.fixture(scope="module")
def served(
    module_servers: Servers, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ServerProcess, Path]:
    """One server for the faults that concern one model each; every test has its own model."""
    repo = tmp_path_factory.mktemp("faults") / "repo"
    repo.mkdir()
    return module_servers.start(repo, poll_interval_s=0.1, env=ADMIN_ENV), repo


def _entry(server: ServerProcess, model: str, version: int) -> dict[str, str]:
    entries = repository_index(server.url, TOKEN)
    found = [e for e in entries if e["name"] == model and e["version"] == str(version)]
    assert len(found) == 1, entries
    return found[0]


def _state(server: ServerProcess, model: str, version: int) -> str:
    """The version's state in the index ("" while the server has not seen it)."""
    entries = repository_index(server.url, TOKEN)
    found = [e["state"] for e in entries if e["name"] == model and e["version"] == str(version)]
    return found[0] if found else ""


def _failures(server: ServerProcess, model: str) -> float:
    return metric_value(server.url, "recserve_model_load_failures_total", {"model": model})


@pytest.mark.slow
@pytest.mark.parametrize("kind", REPLACEABLE)
def test_broken_new_version_leaves_the_old_serving_until_fixed(
    served: tuple[ServerProcess, Path], kind: str
) -> None:
    (server, repo), model = served, f"broken-{kind}"
    damage, reason = DAMAGE[kind]
    _, params1 = publish_random_version(repo, model, seed=1)
    wait_until(lambda: served_versions(server.url, model) == [1], 30, "version 1 served")

    with Traffic(server.url, model) as traffic:
        broken, params2 = _publish_damaged(repo, model, 2, damage)
        wait_until(lambda: _state(server, model, 2) == "UNAVAILABLE", 30, "the failure reported")
        assert reason in _entry(server, model, 2)["reason"]
        assert _entry(server, model, 1)["state"] == "READY"
        assert served_versions(server.url, model) == [1]
        assert f"cannot load model '{model}' version 2: " in server.log()
        time.sleep(0.5)  # five polls: an unchanged failure is not retried, nor counted again
        assert _failures(server, model) == 1
        response = httpx.get(f"{server.url}/v2/models/{model}/versions/2/ready")
        assert response.status_code == 503 and reason not in response.json()["error"]
        assert response.json() == {"error": f"model '{model}' version 2 is not ready"}

        _replace_files(repo, broken, 2)
        wait_until(lambda: served_versions(server.url, model) == [2], 30, "version 2 served")
    traffic.check(params1, params2)
    assert _entry(server, model, 2) == {
        "name": model,
        "version": "2",
        "state": "READY",
        "reason": "",
    }


@pytest.mark.slow
def test_model_file_replaced_in_place(served: tuple[ServerProcess, Path]) -> None:
    """Garbage written over a served model.onnx: the loaded copy serves on, the failure shows,
    and a valid replacement is loaded."""
    (server, repo), model = served, "in-place"
    published, params1 = publish_random_version(repo, model, seed=1)
    wait_until(lambda: served_versions(server.url, model) == [1], 30, "version 1 served")
    params2 = random_params(N_USERS + 1, N_ITEMS + 1, seed=2)

    with Traffic(server.url, model) as traffic:
        with open(published.path / "model.onnx", "r+b") as handle:  # not atomic: in place
            handle.write(b"garbage" * 100)
        wait_until(lambda: _failures(server, model) == 1, 30, "the failure counted")
        entry = _entry(server, model, 1)
        assert entry["state"] == "READY"  # the copy in memory serves on
        assert "reloading failed" in entry["reason"] and "sha256" in entry["reason"]
        assert f"cannot load model '{model}' version 1: " in server.log()

        _replace_files(repo, published.path, 2)
        wait_until(lambda: _entry(server, model, 1)["reason"] == "", 30, "the fix loaded")
        users, items = random_rows(16, N_USERS, N_ITEMS, seed=99)
        body, headers = infer_body(users, items)
        response = httpx.post(
            f"{server.url}/v2/models/{model}/infer", content=body, headers=headers
        )
        np.testing.assert_allclose(
            binary_scores(response.content, response.headers),
            reference_scores(params2, users, items),
            rtol=1e-4,
            atol=1e-5,
        )
    traffic.check(params1, params2)


@pytest.mark.slow
def test_repository_directory_disappears_and_comes_back(repository: Path, servers: Servers) -> None:
    elsewhere = repository.with_name("elsewhere")
    _, params1 = publish_random_version(repository, "m", seed=1)
    server = servers.start(repository, poll_interval_s=0.1, env=ADMIN_ENV)
    with Traffic(server.url, "m") as traffic:
        repository.rename(elsewhere)
        wait_until(lambda: "cannot be read" in server.log(), 30, "the failure logged")
        assert _entry(server, "m", 1)["state"] == "READY"
        n = len(traffic.replies)
        wait_until(lambda: len(traffic.replies) > n + 10, 30, "more requests served")

        elsewhere.rename(repository)
        _, params2 = publish_random_version(repository, "m", seed=2)
        wait_until(lambda: served_versions(server.url, "m") == [2], 30, "version 2 served")
    traffic.check(params1, params2)
    log = server.log()
    assert log.count("cannot be read") == 1  # said once, not once per poll
    assert "is readable again" in log


@pytest.mark.slow
def test_a_removed_broken_version_is_forgotten(served: tuple[ServerProcess, Path]) -> None:
    (server, repo), model = served, "removed-broken"

    broken, _ = _publish_damaged(repo, model, 1, _truncate)
    wait_until(lambda: _failures(server, model) == 1, 30, "the failure counted")
    assert "sha256" in _entry(server, model, 1)["reason"]
    response = httpx.get(f"{server.url}/v2/models/{model}/ready")
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json() == {"error": f"model '{model}' has no version ready"}

    shutil.rmtree(broken)
    wait_until(
        lambda: (
            repository_index(server.url, TOKEN).count(
                {"name": model, "version": "", "state": "UNAVAILABLE", "reason": "no versions"}
            )
            == 1
        ),
        30,
        "the version gone from the index",
    )
    response = httpx.get(f"{server.url}/v2/models/{model}/ready")
    assert response.status_code == 503
    assert response.json() == {"error": f"model '{model}' has no version ready"}
    publish_random_version(repo, model, seed=2)
    wait_until(lambda: served_versions(server.url, model) == [1], 30, "the new version 1 served")


# What no caller without the admin token may read: paths, checksums, OS and library messages,
# the sizes of the version's tables (50 users and 40 items: 51 and 41 rows, with row 0).
INTERNAL = re.compile(
    rf"sha256|errno|onnxruntime|codec|/tmp/|/home/|/root/|[0-9a-f]{{12}}"
    rf"|\b({N_USERS}|{N_USERS + 1}|{N_ITEMS - 1}|{N_ITEMS}|{N_ITEMS + 1})\b",
    re.IGNORECASE,
)


def _public_requests(model: str) -> list[tuple[str, str, bytes, str]]:
    """Every request about ``model`` (its only version, 1, is broken) that needs no token:
    method, path, body, and the one message each answer may hold."""
    no_version = f"model '{model}' has no version ready"
    not_ready = f"model '{model}' version 1 is not ready"
    requests = []
    for v2, v1, message in (
        (f"/v2/models/{model}", f"/v1/models/{model}", no_version),
        (f"/v2/models/{model}/versions/1", f"/v1/models/{model}/versions/1", not_ready),
    ):
        requests += [
            ("GET", v2, b"", message),
            ("GET", f"{v2}/ready", b"", message),
            ("GET", f"{v2}/config", b"", message),
            ("GET", f"{v2}/stats", b"", message),
            ("POST", f"{v2}/infer", json_body([1], [1]), message),
            ("POST", f"{v1}/score", b'{"user_id": "u1", "item_ids": ["i1"]}', message),
            ("POST", f"{v1}/recommend", b'{"user_id": "u1"}', message),
        ]
    return requests


@pytest.mark.slow
def test_a_broken_version_tells_its_callers_only_that_it_is_not_ready(
    served: tuple[ServerProcess, Path],
) -> None:
    """For each kind of damage: every answer a caller without the token gets is 503 "not ready"
    with Retry-After and nothing internal; the reason is in the log (once) and the admin's index."""
    server, repo = served
    models = {kind: f"leak-{kind}" for kind in DAMAGE}
    for kind, model in models.items():
        _publish_damaged(repo, model, 1, DAMAGE[kind][0])
    wait_until(
        lambda: all(_state(server, m, 1) == "UNAVAILABLE" for m in models.values()),
        30,
        "every failure reported",
    )
    time.sleep(0.5)  # five polls: an unchanged failure is not retried, nor logged again

    log = server.log()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for kind, model in models.items():
            reason = DAMAGE[kind][1]
            assert reason in _entry(server, model, 1)["reason"], kind
            failure = f"cannot load model '{model}' version 1: "
            assert log.count(failure) == 1 and reason in log.split(failure)[1].splitlines()[0]
            for method, path, body, message in _public_requests(model):
                response = client.request(method, path, content=body)
                assert response.status_code == 503, (kind, path, response.text)
                assert response.json() == {"error": message}, (kind, path)
                assert int(response.headers["retry-after"]) >= 1, (kind, path)
                assert not INTERNAL.search(response.text), (kind, path, response.text)
        for method, path in (("GET", "/v2/models"), ("POST", "/v2/repository/index")):
            index = client.request(method, path)
            assert index.status_code == 200
            broken = [e for e in index.json() if e["name"] in models.values()]
            assert len(broken) == len(DAMAGE)
            assert {e["reason"] for e in broken} == {"failed to load"}
            assert not INTERNAL.search(str(broken)), broken
