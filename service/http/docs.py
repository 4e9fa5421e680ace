"""``/docs`` (Swagger UI) and ``/redoc`` that work with no internet access.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a host without internet (most
cluster nodes) they render blank. Here the pages are FastAPI's own builders pointed at assets the
server serves itself under :data:`ASSETS_PATH`, from the ``fastapi-offline`` package (a maintained
bundle of both UIs, updated with their releases), so no asset is copied into this repository.
Swagger UI's validator badge, which calls a public validator with the schema's address, is turned
off: nothing on these pages reaches another host.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"
ASSETS_PATH = "/docs/assets"
ASSETS_PACKAGE = "fastapi_offline"

SWAGGER_UI_PARAMETERS = {
    "validatorUrl": None,  # no call to a public validator
    "persistAuthorization": True,  # the admin token entered with Authorize survives a reload
    "displayRequestDuration": True,
}


def add_offline_docs(app: FastAPI) -> None:
    """Serve ``/docs``, ``/redoc`` and their assets from this server (build the app with
    ``docs_url=None, redoc_url=None`` so FastAPI's CDN pages are not registered too)."""
    assets = files(ASSETS_PACKAGE) / "static"
    app.mount(ASSETS_PATH, StaticFiles(directory=str(assets)), name="docs_assets")

    def asset(request: Request, name: str) -> str:
        return f"{request.scope.get('root_path', '')}{ASSETS_PATH}/{name}"

    def schema_url(request: Request) -> str:
        return f"{request.scope.get('root_path', '')}{app.openapi_url}"

    async def swagger_ui(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=schema_url(request),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=asset(request, "swagger-ui-bundle.js"),
            swagger_css_url=asset(request, "swagger-ui.css"),
            swagger_favicon_url=asset(request, "favicon.png"),
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(
            openapi_url=schema_url(request),
            title=f"{app.title} - ReDoc",
            redoc_js_url=asset(request, "redoc.standalone.js"),
            redoc_favicon_url=asset(request, "favicon.png"),
            with_google_fonts=False,
        )

    app.add_api_route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(REDOC_PATH, redoc, methods=["GET"], include_in_schema=False)
