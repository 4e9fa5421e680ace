"""Schema-driven fuzzing of both APIs (schemathesis): the server does what its OpenAPI document
says, for every request the document can describe, valid or not.

Every operation of ``/openapi.json`` (the KServe V2 API, the repository API and the recommendation
API) is called against a real server with generated path parameters, headers and bodies: cases
that follow the schema and cases that break it. The path parameters are also drawn from the names
the repository holds, so that generated bodies reach the decoders and the batcher. Every one of
schemathesis' checks runs on every answer: no 5xx, every status and header documented, every body
and content type as documented, a request the schema refuses is refused (4xx), one it accepts is
not refused, load and unload refuse a missing or wrong admin token.

One allowance, for inference only: a tensor the schema accepts may still be refused with 400 for
what no static schema can know (the served model's tensor names, shapes and id ranges, and the
element count of a shape): the cases that reach a model are answered 400 naming the tensor. The
same for the features of a recommendation request (``user_features``, ``context``): which the
model takes, and of what kind, is its signature's; a refusal names the field and the feature.
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
# Each case's checks include a few probes (without the token, with a wrong one): bounded in time.
DEADLINE_S = 30
# Served under the policy "all", so that no version the cases name is legitimately not ready.
MODELS = ["recs", "other"]
VERSIONS = ["1", "2"]
SPARE = "spare"  # the only model the repository API's cases may unload and load
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]


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
    model_decides = {"expected-statuses": ["2xx", "400", "404", "409", "429", "5xx"]}
    # schemathesis' own list, and 413: a body over --max-request-bytes is refused as such.
    refused = {"expected-statuses": [*REFUSED, "413"]}
    config = SchemathesisConfig.from_dict(
        {
            "request-timeout": DEADLINE_S,
            "generation": {
                "mode": "all",
                "max-examples": MAX_EXAMPLES,
                "database": "none",
                "deterministic": True,
            },
            "checks": {"negative_data_rejection": refused},
            "operations": [
                {
                    "include-path-regex": "/(infer|recommend|score)$",
                    "checks": {"positive_data_acceptance": model_decides},
                }
            ],
        }
    )
    return schemathesis.openapi.from_dict(_with_known_names(raw), config=config)


schema = _schema()


def _needs_token(case: Any) -> bool:
    return bool(case.operation.definition.raw.get("security"))


@pytest.mark.slow
@schema.parametrize()
def test_the_server_does_what_its_schema_says(case: Any, server: ServerProcess) -> None:
    token = {"Authorization": f"Bearer {TOKEN}"} if _needs_token(case) else None
    response = case.call_and_validate(base_url=server.url, headers=token)
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    if response.status_code >= 400:
        assert set(response.json()) == {"error"}
