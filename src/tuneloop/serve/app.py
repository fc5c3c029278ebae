"""FastAPI app with the OpenAI request/response shapes: /v1/chat/completions, /v1/models, /health."""

from __future__ import annotations

import secrets
import time
import uuid
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tuneloop.serve.engine import Engine


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(BaseModel):
    # OpenAI clients send fields we do not use (user, n=1, ...): accept and ignore them.
    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False


def error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": code}}, status_code=status)


def create_app(engine: Engine, model_name: str, api_keys: list[str] | None = None, max_tokens_limit: int = 1024) -> FastAPI:
    app = FastAPI(title="tuneloop", version="0.1.0")
    served = {model_name, engine.base_model}

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        if api_keys and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not any(secrets.compare_digest(given, key) for key in api_keys):
                return error(401, "invalid or missing API key (Authorization: Bearer KEY)", "invalid_request_error", "invalid_api_key")
        return await call_next(request)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models() -> dict:
        now = int(time.time())
        return {"object": "list", "data": [{"id": name, "object": "model", "created": now, "owned_by": "tuneloop"} for name in sorted(served)]}

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        if body.model not in served:
            return error(404, f"model '{body.model}' is not served here (served: {', '.join(sorted(served))})", "invalid_request_error", "model_not_found")
        if body.stream:
            return error(400, "stream=true is not supported yet; send stream=false", "invalid_request_error", "unsupported")
        limit = body.max_completion_tokens or body.max_tokens or 256
        if limit > max_tokens_limit:
            return error(400, f"max_tokens {limit} exceeds this server's limit of {max_tokens_limit}", "invalid_request_error")
        stop = [body.stop] if isinstance(body.stop, str) else body.stop
        # Generation is CPU-bound: run it off the event loop so /health stays responsive.
        result = await run_in_threadpool(
            engine.chat, [m.model_dump() for m in body.messages], max_tokens=limit,
            temperature=body.temperature, top_p=body.top_p, stop=stop, seed=body.seed,
        )
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()), "model": body.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text}, "finish_reason": result.finish_reason}],
            "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                      "total_tokens": result.prompt_tokens + result.completion_tokens},
        }

    return app
