"""``/docs`` and ``/redoc`` need nothing from another host, and the OpenAPI document they show
says what the docs promise: tags on every operation, the admin token as a bearer scheme on the
repository's load and unload, and an error body for every refusal."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlsplit

import pytest

from service.http.docs import ASSETS_PATH
from tests.app_harness import Harness

ASSET_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _References(HTMLParser):
    """Every ``<script src>`` and ``<link href>`` of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.found.append(value)


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.found


@pytest.mark.anyio
@pytest.mark.parametrize(("page", "expected"), [("/docs", 3), ("/redoc", 2)])
async def test_doc_pages_load_every_asset_from_this_server(
    served: Harness, page: str, expected: int
) -> None:
    response = await served.client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    found = references(response.text)
    assert len(found) == expected, found  # the UI's script, (Swagger's stylesheet,) the icon
    assert "http://" not in response.text and "https://" not in response.text
    for reference in found:
        parts = urlsplit(reference)
        assert not parts.scheme and not parts.netloc, f"{page} loads {reference} from another host"
        assert parts.path.startswith(ASSETS_PATH + "/"), reference
        asset = await served.client.get(reference)
        assert asset.status_code == 200, reference
        suffix = parts.path[parts.path.rindex(".") :]
        assert asset.headers["content-type"].startswith(ASSET_TYPES[suffix]), reference
        assert len(asset.content) > 1000, reference


@pytest.mark.anyio
async def test_swagger_ui_is_the_bundle_and_calls_no_validator(served: Harness) -> None:
    page = (await served.client.get("/docs")).text
    assert '"validatorUrl": null' in page
    bundle = await served.client.get(f"{ASSETS_PATH}/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    redoc = await served.client.get(f"{ASSETS_PATH}/redoc.standalone.js")
    assert b"Redoc" in redoc.content


@pytest.mark.anyio
async def test_doc_pages_follow_a_root_path(served: Harness) -> None:
    served.app.root_path = "/api"
    page = (await served.client.get("/api/docs")).text
    assert f'src="/api{ASSETS_PATH}/swagger-ui-bundle.js"' in page
    assert "url: '/api/openapi.json'" in page


async def _operations(served: Harness) -> dict[tuple[str, str], dict[str, Any]]:
    document = (await served.client.get("/openapi.json")).json()
    return {
        (method, path): operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


@pytest.mark.anyio
async def test_every_operation_is_tagged_and_summarised(served: Harness) -> None:
    operations = await _operations(served)
    assert operations
    for (method, path), operation in operations.items():
        assert operation.get("tags"), f"{method} {path} has no tag"
        assert operation.get("summary"), f"{method} {path} has no summary"
    v2_tags = {
        tag for (_, path), op in operations.items() if path.startswith("/v2") for tag in op["tags"]
    }
    assert {"health", "models", "inference", "repository"} <= v2_tags


@pytest.mark.anyio
async def test_the_admin_token_guards_load_and_unload_only(served: Harness) -> None:
    document = (await served.client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["adminToken"]
    assert scheme == {**scheme, "type": "http", "scheme": "bearer"}
    guarded = {
        (method, path)
        for (method, path), operation in (await _operations(served)).items()
        if operation.get("security")
    }
    assert guarded == {
        ("post", "/v2/repository/models/{model}/load"),
        ("post", "/v2/repository/models/{model}/unload"),
    }
    for method, path in guarded:
        operation = document["paths"][path][method]
        assert operation["security"] == [{"adminToken": []}]
        assert "403" in operation["responses"]


@pytest.mark.anyio
async def test_every_refusal_is_documented_with_the_error_body(served: Harness) -> None:
    document = (await served.client.get("/openapi.json")).json()
    error = document["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and error["additionalProperties"] is False
    for (method, path), operation in (await _operations(served)).items():
        responses = operation["responses"]
        # Any request can be refused at the edge: malformed, too slow, headers too large.
        assert {"200", "400", "408", "431"} <= set(responses), f"{method} {path}"
        for status, response in responses.items():
            if status.startswith(("4", "5")):
                body = response["content"]["application/json"]["schema"]
                assert body == {"$ref": "#/components/schemas/Error"}, f"{method} {path} {status}"
        if method == "post":
            assert "413" in responses, f"{method} {path}"


@pytest.mark.anyio
async def test_refusals_to_retry_carry_retry_after_in_the_schema(served: Harness) -> None:
    operations = await _operations(served)
    infer = operations[("post", "/v2/models/{model}/infer")]["responses"]
    assert "Retry-After" in infer["503"]["headers"]
    assert {"404", "503"} <= set(infer)
    live = operations[("get", "/v2/health/live")]["responses"]
    assert "503" not in live and "404" not in live
