"""What makes the HTTP app presentable and uniform: one error shape for every error, and
the API docs served by the app itself.

- `error_response`: the project's one error body, `{"error": ..., "field": ...}` (plus
  what an error adds). `install_error_handlers` gives FastAPI's own errors that shape: an
  unknown path (404), a wrong method (405), a parameter out of range (422, the field
  named, the input never repeated), a missing or wrong bearer token (401 with
  `WWW-Authenticate: Bearer`).
- `install_docs`: Swagger UI at /docs and ReDoc at /redoc with their scripts and
  stylesheets served from the app (`/docs/assets/...`, the files of the `fastapi-offline`
  package, Swagger UI 5, which renders OpenAPI 3.1), so the docs work on a host without
  internet access and load nothing from a CDN."""

from __future__ import annotations

from importlib.resources import files
from typing import Any

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from custate.adapters.auth import AuthError

__all__ = ["ASSETS", "error_response", "install_docs", "install_error_handlers"]

ASSETS = "/docs/assets"


def error_response(
    status: int,
    error: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The project's error body: `{"error": message, "field": name or null, ...extra}`."""
    return JSONResponse({"error": error, "field": field, **extra}, status, headers=headers)


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("query", "path", "header", "body")]
    field = loc[0] if loc else None
    message = str(first.get("msg", "invalid request"))
    return error_response(422, f"{field}: {message}" if field else message, field)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), None, headers)


def _auth(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AuthError)
    return error_response(401, exc.message, "authorization", {"WWW-Authenticate": "Bearer"})


def install_error_handlers(app: FastAPI) -> None:
    """Every error FastAPI or Starlette answers by itself, in the project's shape."""
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(AuthError, _auth)


def install_docs(app: FastAPI, title: str) -> None:
    """/docs (Swagger UI) and /redoc from local assets. The app must have been made with
    `docs_url=None, redoc_url=None` (FastAPI's own pages load from a CDN)."""
    static = files(fastapi_offline) / "static"
    app.mount(ASSETS, StaticFiles(directory=str(static)), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{title} - API docs",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{title} - API reference",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
