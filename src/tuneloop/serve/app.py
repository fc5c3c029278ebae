"""The FastAPI app: OpenAI-compatible /v1 routes, /health, /metrics, and /admin for run-time changes.

/v1 and /admin need an API key when keys are configured. Malformed requests get a 400 with the field
and the problem, never a 500. On shutdown (SIGTERM) uvicorn stops accepting connections and waits
for requests in flight; then the engines finish their queues and the request log is flushed.
"""

from __future__ import annotations

import secrets
import time
from contextlib import asynccontextmanager
from typing import Protocol

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from tuneloop.db.requestlog import RequestStore
from tuneloop.errors import TuneloopError
from tuneloop.serve.catalog import Catalog, ModelNotFound
from tuneloop.http import error
from tuneloop.serve.handler import Generate, Limits
from tuneloop.serve.ab_routes import Route
from tuneloop.serve.schemas import ChatRequest, CompletionRequest, FeedbackRequest
from tuneloop.serve.telemetry import Metrics, RequestLog


class ModelRef(BaseModel):
    model: str


class Background(Protocol):
    """Work that runs beside the server (e.g. the fine-tuning jobs worker): started and stopped with it."""

    def start(self) -> object: ...

    def stop(self) -> None: ...


def create_app(catalog: Catalog, *, api_keys: list[str] | None = None, limits: Limits | None = None,
               request_log: RequestLog | None = None, feedback: RequestStore | None = None,
               routers: list[APIRouter] = (), background: list[Background] = ()) -> FastAPI:
    """The serving app. `feedback`: where POST /v1/feedback stores judgements (None: the route answers 501).
    `routers`: more routes behind the same keys (the jobs API); `background`: started and stopped with the app."""
    metrics, limits = Metrics(), limits or Limits()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for work in background:
            work.start()
        yield
        for work in background:
            await run_in_threadpool(work.stop)
        await run_in_threadpool(catalog.close)  # requests in flight are done by now; finish the queues
        if request_log is not None:
            request_log.close()

    app = FastAPI(title="tuneloop", version="0.1.0", lifespan=lifespan)

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if api_keys and request.url.path.startswith(("/v1/", "/admin/")):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not any(secrets.compare_digest(given, key) for key in api_keys):
                return error(401, "invalid or missing API key (send Authorization: Bearer KEY)", code="invalid_api_key")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, err: RequestValidationError):
        return error(400, "invalid request: " + "; ".join(_describe(e) for e in err.errors()[:5]))

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "base_model": catalog.base, "queue_depth": sum(e.queue_depth for e in catalog.engines.values())}

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
    async def chat_completions(body: ChatRequest):
        return await chat(body)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        return await complete(body)

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
    def set_route(name: str, route: Route) -> dict:
        catalog.routes.set(name, route)
        return catalog.routes.to_dict()

    @router.delete("/routes/{name}")
    def remove_route(name: str):
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
    where = ".".join(str(p) for p in problem.get("loc", ()) if p != "body") or "body"
    return f"{where}: {problem.get('msg', 'invalid')}"
