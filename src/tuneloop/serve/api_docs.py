"""API docs that render offline: FastAPI's /docs and /redoc load Swagger UI and ReDoc from a public CDN, which an
offline or air-gapped server cannot reach (the page stays blank). Here /docs is plain HTML rendered on the server
from the same OpenAPI schema (every route, its summary and its request body's fields), with a link to
/openapi.json for tools; /redoc points to it."""

from __future__ import annotations

from html import escape

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse

_STYLE = ("body{font:14px/1.5 system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
          "code{background:#f3f3f3;padding:0 .25em}td{vertical-align:top;padding:.3em .8em;border-top:1px solid #ddd}"
          ".m{font-weight:bold;font-family:monospace}")


def add_api_docs(app: FastAPI) -> None:
    """Serve /docs (and /redoc, redirected) without any external script. Create `app` with docs_url=None, redoc_url=None."""

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return HTMLResponse(render(app.openapi()))

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> RedirectResponse:
        return RedirectResponse("/docs")


def render(schema: dict) -> str:
    info = schema.get("info", {})
    rows = []
    for path, methods in sorted(schema.get("paths", {}).items()):
        for method, op in methods.items():
            fields = _body_fields(schema, op)
            rows.append(f"<tr><td class=m>{escape(method.upper())}</td><td><code>{escape(path)}</code></td>"
                        f"<td>{escape(op.get('summary') or '')}<br><small>{escape(fields)}</small></td></tr>")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(info.get('title', 'API'))} API</title>"
            f"<style>{_STYLE}</style></head><body><h1>{escape(info.get('title', 'API'))} {escape(info.get('version', ''))}</h1>"
            "<p>OpenAI-compatible API. The machine-readable schema is <a href=/openapi.json><code>/openapi.json</code></a> "
            "(load it in any OpenAPI viewer, e.g. a local Swagger UI).</p>"
            f"<table><tr><th>method</th><th>path</th><th>what it does</th></tr>{''.join(rows)}</table></body></html>")


def _body_fields(schema: dict, op: dict) -> str:
    content = (op.get("requestBody") or {}).get("content", {})
    ref = next(iter(content.values()), {}).get("schema", {}).get("$ref", "")
    model = schema.get("components", {}).get("schemas", {}).get(ref.rsplit("/", 1)[-1], {}) if ref else {}
    names = list(model.get("properties", {}))
    return ("body: " + ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")) if names else ""
