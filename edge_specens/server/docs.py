"""The API's /docs page, served from vendored Swagger UI files, and an OpenAPI schema without
duplicate operation ids.

FastAPI's default /docs page loads Swagger UI from a CDN, so on a machine without internet access
(where a local model server often runs) it was a blank page. The files of swagger-ui-dist (npm,
pinned; swagger_ui/VENDORED.md says which and how) ship as package data and are served under
ASSETS. /redoc would load its bundle from a CDN too, so it is off.

Routes that answer GET and HEAD (/health, /v1/models) gave one operation id to both methods, and
FastAPI warned "Duplicate Operation ID" when the schema was first built (opening /docs). HEAD is
GET without a body, so the schema lists GET only.
"""

from __future__ import annotations

import copy
from pathlib import Path

SWAGGER_UI_VERSION = "5.35.0"
ASSETS = "/docs/assets"
FILES = Path(__file__).resolve().parent / "swagger_ui"


def install_docs(app) -> None:
    """/docs (Swagger UI from FILES), /docs/assets/..., and app.openapi without HEAD operations.
    The app must be built with docs_url=None and redoc_url=None."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.openapi.utils import get_openapi
    from fastapi.staticfiles import StaticFiles

    app.mount(ASSETS, StaticFiles(directory=FILES), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
        )

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=[_without_head(r) for r in app.routes],
            )
        return app.openapi_schema

    app.openapi = openapi


def _without_head(route):
    """A copy of `route` that does not list HEAD beside GET (the schema's view of it only)."""
    methods = getattr(route, "methods", None)
    if not methods or "HEAD" not in methods or "GET" not in methods:
        return route
    twin = copy.copy(route)
    twin.methods = set(methods) - {"HEAD"}
    return twin
