"""The FastAPI app: OpenAI-compatible /v1 routes, /health, /metrics, and /admin for run-time changes.

/v1 and /admin need an API key when keys are configured. Malformed requests get a 400 with the field
and the problem, never a 500; every error, from any layer (unknown routes, unparsable bodies, bodies over
the size limit), leaves in the OpenAI error envelope. On shutdown (SIGTERM) uvicorn stops accepting connections and waits
for requests in flight; then the engines finish their queues and the request log is flushed.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tuneloop import __version__
from tuneloop.access import Access
from tuneloop.db.requestlog import RequestStore
from tuneloop.errors import TuneloopError
from tuneloop.serve.api_docs import add_api_docs
from tuneloop.serve.catalog import Catalog, ModelNotFound
from tuneloop.serve.guards import BodyTooLarge, Guards
from tuneloop.http import error
from tuneloop.serve.handler import Generate, Limits
from tuneloop.serve.ab_routes import Route
from tuneloop.serve.schemas import ChatRequest, CompletionRequest, FeedbackRequest
from tuneloop.serve.telemetry import Metrics, RequestLog


log = logging.getLogger(__name__)


class ModelRef(BaseModel):
    model: str = Field(min_length=1, max_length=256)


class Background(Protocol):
    """Work that runs beside the server (e.g. the fine-tuning jobs worker): started and stopped with it."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


def create_app(catalog: Catalog, *, api_keys: list[str] | None = None, access: Access | None = None, limits: Limits | None = None,
               request_log: RequestLog | None = None, feedback: RequestStore | None = None,
               routers: list[APIRouter] = (), background: list[Background] = (),
               draining: threading.Event | None = None) -> FastAPI:
    """The serving app. `api_keys` (or `access`, which also names read-only keys): the keys every route but
    /health and /metrics needs (none: open). `feedback`: where POST /v1/feedback stores judgements (None: the route answers 501).
    `routers`: more routes behind the same keys (the jobs API); `background`: started and stopped with the app;
    `draining`: set when shutdown begins, after which new requests get 503 (see guards.py)."""
    metrics, limits = Metrics(), limits or Limits()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for work in background:
            work.start()
        yield
        # Requests in flight are done by now (or past the drain limit): stop background work, then the engines.
        budget = getattr(app.state, "stop_within", None)
        for work in background:
            await run_in_threadpool(work.stop, *([max(budget(), 0.0)] if budget else []))
        await run_in_threadpool(catalog.close, max(budget(), 0.0) if budget else None)
        if request_log is not None:
            request_log.close()

    app = FastAPI(title="tuneloop", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    add_api_docs(app)  # rendered here: FastAPI's own pages load their scripts from a CDN, blank offline
    app.state.draining = draining or threading.Event()
    app.add_middleware(Guards, limit_for=lambda path: limits.max_file_bytes if path == "/v1/files" else limits.max_body_bytes,
                       draining=app.state.draining, access=access or Access(write_keys=list(api_keys or [])))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, err: RequestValidationError):
        problems = err.errors()
        described = list(dict.fromkeys(_describe(e) for e in problems))  # a union repeats the field per branch
        return error(400, "invalid request: " + "; ".join(described[:5]), param=(_where(problems[0]) or None) if problems else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        kind = "server_error" if err.status_code >= 500 else "invalid_request_error"
        message = {404: f"no route {request.method} {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        code = "request_too_large" if isinstance(err, BodyTooLarge) else None
        return error(err.status_code, message.get(err.status_code, str(err.detail)), kind, code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error(500, f"internal error ({err.__class__.__name__}); the server log has the details", "server_error")

    @app.get("/health")
    def health():
        down = [e.ref for e in catalog.engines.values() if not getattr(e, "healthy", True)]
        body = {"status": "degraded" if down else "ok", "base_model": catalog.base,
                "queue_depth": sum(e.queue_depth for e in catalog.engines.values()),
                "engines": {e.ref: "down" if e.ref in down else "ok" for e in catalog.engines.values()}}
        return JSONResponse(body, status_code=503 if down else 200)

    @app.get("/metrics")
    def prometheus() -> Response:
        metrics.sample_engines(catalog.engines)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict:
        names = await run_in_threadpool(catalog.listing)
        now = int(time.time())
        return {"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "tuneloop"} for n in names]}

    chat, complete = (Generate(kind, catalog, metrics, request_log, limits) for kind in ("chat", "completion"))

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest, request: Request):
        return await chat(body, request.is_disconnected)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        return await complete(body, request.is_disconnected)

    @app.post("/v1/feedback")
    def add_feedback(body: FeedbackRequest):
        if feedback is None:
            return error(501, "feedback needs a database; start the server with --registry")
        if request_log is not None:
            request_log.flush()
        if request_log is not None and request_log.store is not None and feedback.request(body.request_id) is None:
            return error(404, f"no logged request with id '{body.request_id}' (the id of a completion this server returned)")
        stored = feedback.add_feedback(body.request_id, rating=body.rating, score=body.score, corrected=body.corrected,
                                       comment=body.comment)
        return {"object": "feedback", **stored}

    for router in routers:
        app.include_router(router)
    app.include_router(_admin_router(catalog))
    return app


def _admin_router(catalog: Catalog) -> APIRouter:
    """Run-time changes: A/B route weights, and which adapters are resident."""
    router = APIRouter(prefix="/admin")

    @router.get("/routes")
    def routes() -> dict:
        return catalog.routes.to_dict()

    @router.put("/routes/{name}")
    def set_route(route: Route, name: str = PathParam(min_length=1, max_length=256)) -> dict:
        catalog.routes.set(name, route)
        return catalog.routes.to_dict()

    @router.delete("/routes/{name}")
    def remove_route(name: str = PathParam(min_length=1, max_length=256)):
        return catalog.routes.to_dict() if catalog.routes.remove(name) else error(404, f"no route '{name}'")

    @router.get("/models")
    def resident() -> dict:
        return {"engines": [{"model": e.ref, "adapters": list(e.adapters), "queue_depth": e.queue_depth}
                            for e in catalog.engines.values()]}

    @router.post("/models/load")
    def load(body: ModelRef):
        return _adapter_action(catalog, body.model, lambda t: t.engine.load_adapter(t.adapter) or True)

    @router.post("/models/unload")
    def unload(body: ModelRef):
        return _adapter_action(catalog, body.model, lambda t: t.engine.unload_adapter(t.adapter.key))

    return router


def _adapter_action(catalog: Catalog, model: str, action):
    try:
        target = catalog.resolve(model)
        if target.adapter is None:
            return error(400, f"'{model}' is not an adapter; only adapters load and unload at run time")
        return {"model": target.version, "done": bool(action(target))}
    except ModelNotFound as err:
        return error(404, str(err), code="model_not_found")
    except (TuneloopError, ValidationError, ValueError) as err:
        return error(409, str(err))


def _describe(problem: dict) -> str:
    """`field.path: what is wrong`, without pydantic's names for the branches of a union (`constrained-int`)."""
    where = _where(problem) or "body"
    return f"{where}: {problem.get('msg', 'invalid')}"


def _where(problem: dict) -> str:
    def branch(part) -> bool:  # e.g. "literal['auto']", "constrained-int", "str", "list[TextPart]"
        return isinstance(part, str) and ("[" in part or "-" in part or part in ("str", "int", "float", "bool", "list", "dict"))

    return ".".join(str(p) for p in problem.get("loc", ()) if p not in ("body", "query", "path") and not branch(p))
