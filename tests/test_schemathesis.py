"""Schema-driven fuzzing of both APIs (schemathesis): no request the schema can describe, valid or
not, gets a 5xx or breaks the server.

Every operation of ``/openapi.json`` (the KServe V2 API, the repository API and the recommendation
API) is called against a real server with generated path parameters, headers and bodies: cases
that follow the schema and cases that break it. The path parameters are also drawn from the names
the repository holds, so that generated bodies reach the decoders and the batcher.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig

from service.app import create_app
from service.settings import Settings
from tests.factories import publish_random_version
from tests.reliability_tools import write_config
from tests.server_process import ServerProcess, start_server

TOKEN = "fuzz-token"
MAX_EXAMPLES = 50
# Served under the policy "all", so that no version the cases name is legitimately not ready.
MODELS = ["recs", "other"]
VERSIONS = ["1", "2"]
SPARE = "spare"  # the only model the repository API's cases may unload and load


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("fuzz")
    for name in (*MODELS, SPARE):
        write_config(root / "repo", name, {"version_policy": {"all": {}}})
    for seed in (1, 2):
        publish_random_version(root / "repo", "recs", seed=seed)
    publish_random_version(root / "repo", "other", seed=3)
    publish_random_version(root / "repo", SPARE, seed=4)
    running = start_server(
        root / "repo",
        root / "server.log",
        "--poll-interval-s",
        "0",
        "--max-request-bytes",
        str(64 * 1024),
        env={"RECSERVE_ADMIN_TOKEN": TOKEN},
    )
    try:
        yield running
    finally:
        status = running.stop()
    log = running.log()
    assert status == 0, log
    assert "Traceback" not in log, log


def _with_known_names(raw: dict[str, Any]) -> dict[str, Any]:
    """The served schema, with the repository's model names and versions among the choices."""
    schema = copy.deepcopy(raw)
    for path, operations in schema["paths"].items():
        models = [SPARE] if path.startswith("/v2/repository/") else MODELS
        known = {"model": models, "version": VERSIONS}
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in known:
                    served = parameter["schema"]
                    parameter["schema"] = {
                        "anyOf": [{"type": "string", "enum": known[parameter["name"]]}, served]
                    }
    return schema


def _schema() -> Any:
    """The app's OpenAPI document (it depends on the routes only, not on a running server)."""
    raw = create_app(Settings()).openapi()
    config = SchemathesisConfig.from_dict(
        {
            "request-timeout": 30,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                "deterministic": True,
            },
        }
    )
    return schemathesis.openapi.from_dict(_with_known_names(raw), config=config)


schema = _schema()


@pytest.mark.slow
@schema.parametrize()
def test_no_request_gets_a_server_error(case: Any, server: ServerProcess) -> None:
    response = case.call(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}
