"""``/docs`` and ``/openapi.json``: the API explorer, from assets shipped in the package.

FastAPI's default page loads Swagger UI from a CDN: blank offline, and every page
view reaches a third party. ``static/swagger`` holds swagger-ui-dist (Apache-2.0,
its LICENSE and NOTICE alongside; version in ``VERSION``), served from here. Both
routes take ``dependencies`` (the operator gate on public networks); the app must
be created with ``docs_url=None`` and ``openapi_url=None`` so FastAPI serves neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from fastapi import FastAPI, params
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, JSONResponse

SWAGGER_DIR = Path(__file__).parent / "static" / "swagger"
ASSETS_PATH = "/docs/assets"
OPENAPI_PATH = "/openapi.json"


def install_docs(app: FastAPI, dependencies: Sequence[params.Depends] | None = None) -> None:
    """Serve ``/openapi.json``, ``/docs`` and the page's assets.

    ``dependencies`` guard the document and the page (e.g. an operator credential);
    the assets are the public Swagger UI files and stay open.
    """
    app.mount(ASSETS_PATH, StaticFiles(directory=SWAGGER_DIR), name="swagger-assets")
    guards = list(dependencies or ())

    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_PATH,
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon-32x32.png",
        )

    app.add_api_route(
        OPENAPI_PATH, openapi, methods=["GET"], include_in_schema=False, dependencies=guards
    )
    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False, dependencies=guards)
