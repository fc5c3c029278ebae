"""One generation request from HTTP body to response: resolve the model, check limits, queue a job,
answer in one piece or as server-sent events, then record metrics and the request log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from tuneloop.errors import TuneloopError
from tuneloop.grammar import GrammarError
from tuneloop.http import error
from tuneloop.models import render_prompt
from tuneloop.serve import remote
from tuneloop.serve.catalog import ModelNotFound, Target
from tuneloop.serve.engine import Overloaded
from tuneloop.serve.generation import Generation, Sampling
from tuneloop.serve.schemas import ChatRequest, CompletionRequest
from tuneloop.serve.tool_calls import ToolStream, culprit, grammar_for, message


# No tokenizer averages more characters per token than this over a whole prompt (English is ~4): a prompt
# longer than context * this cannot fit, and is refused before the tokenizer spends seconds on it.
CHARS_PER_TOKEN = 32


@dataclass
class Limits:
    default_max_tokens: int = 256
    max_tokens: int = 1024
    timeout: float = 600.0  # seconds per request, queueing included (what the OpenAI SDK waits by default)
    max_body_bytes: int = 8 * 2**20  # any request body but a file upload
    max_file_bytes: int = 512 * 2**20  # POST /v1/files


class Generate:
    """Callable per endpoint ("chat" or "completion") that the app mounts."""

    def __init__(self, endpoint: str, catalog, metrics, request_log, limits: Limits):
        self.endpoint, self.catalog, self.metrics, self.log, self.limits = endpoint, catalog, metrics, request_log, limits
        self.kind = "chat.completion" if endpoint == "chat" else "text_completion"

    async def __call__(self, body: ChatRequest | CompletionRequest, disconnected: Callable[[], Awaitable[bool]] | None = None):
        """The response to one request; `disconnected` (the HTTP request's is_disconnected) lets a non-streaming
        request stop generating when its client has gone (a client timeout, a retrying SDK), instead of
        spending the batch on an answer nobody reads."""
        started, rid = time.perf_counter(), f"{'chatcmpl' if self.endpoint == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        record = {"id": rid, "created_at": dt.datetime.now(dt.timezone.utc).isoformat(), "model": body.model, "variant": None,
                  "route": None, "user": body.user, "request": body.model_dump(exclude_none=True, by_alias=True), "prompt_tokens": 0,
                  "completion_tokens": 0, "response": None, "error": None, "ttft_ms": None}
        try:
            target, decision = await run_in_threadpool(self._resolve, body)
        except ModelNotFound as err:
            return self._fail(record, started, 404, str(err), code="model_not_found")
        record.update(model=target.version or target.requested, variant=target.variant,
                      route=f"{body.model}/{decision.route}" if decision else target.requested if target.variant else None)
        headers = {"x-request-id": rid, "x-tuneloop-model": record["model"]}
        if target.variant:
            headers["x-tuneloop-variant"] = target.variant
        if decision:
            headers["x-tuneloop-route"] = decision.route
        if target.remote is not None:  # a hosted fine-tune: the provider answers
            return await self._proxied(body, target, record, started, headers)
        if body.characters() > target.engine.context * CHARS_PER_TOKEN:
            return self._fail(record, started, 400, f"the prompt has {body.characters():,} characters, more than any prompt "
                              f"that fits the model's context of {target.engine.context} tokens; shorten it",
                              code="context_length_exceeded", headers=headers)

        limit = body.token_limit(self.limits.default_max_tokens)
        if limit > self.limits.max_tokens:
            return self._fail(record, started, 400, f"max_tokens is {limit}, above this server's limit of {self.limits.max_tokens}", headers=headers)
        prompt, sources = await run_in_threadpool(self._prompt, body, target)
        ids = await run_in_threadpool(target.engine.encode, prompt)
        if len(ids) + limit > target.engine.context:
            return self._fail(record, started, 400, f"the prompt has {len(ids)} tokens and max_tokens is {limit}: together "
                              f"{len(ids) + limit}, more than the model's context of {target.engine.context} tokens; shorten "
                              "the prompt or lower max_tokens", code="context_length_exceeded", headers=headers)
        record["prompt_tokens"] = len(ids)

        events: asyncio.Queue = asyncio.Queue()
        try:
            job = Generation(ids, limit, _handoff(events), Sampling(body.temperature, body.top_p, body.seed), body.stop or [], target.adapter)
        except (RuntimeError, ValueError, OverflowError) as err:  # e.g. a seed the generator refuses
            return self._fail(record, started, 400, f"invalid sampling settings: {err}", headers=headers)
        if self.endpoint == "chat":
            job.grammar, field = grammar_for(body)
            try:
                if job.grammar is not None:
                    job.constraint = await run_in_threadpool(target.engine.constraint_for, job.grammar)
            except GrammarError as err:
                field = culprit(body, field, target.engine.constraint_for)
                return self._fail(record, started, 400, f"{field}: {err}", code="invalid_schema", headers=headers, param=field)
        try:
            target.engine.submit(job)
        except Overloaded as err:
            status = getattr(err, "status", 429)  # 503 when the engine process is down and restarting
            return self._fail(record, started, status, f"server busy: {err}; retry shortly",
                              kind="rate_limit_error" if status == 429 else "server_error", headers={**headers, "Retry-After": "1"})
        except TuneloopError as err:  # e.g. an adapter this engine cannot serve
            return self._fail(record, started, 400, str(err), headers=headers)
        deadline = started + self.limits.timeout
        if body.stream:
            return StreamingResponse(self._stream(body, job, events, record, started, deadline, rid, sources),
                                     media_type="text/event-stream", headers=headers)
        gone = asyncio.Event()
        watcher = asyncio.create_task(_watch(job, disconnected, gone, events)) if disconnected else None
        try:
            async for _ in self._events(job, events, deadline):
                pass
        finally:
            if watcher is not None:
                watcher.cancel()
        if gone.is_set():  # 499, nginx's "client closed request": logged, never seen by the client
            return self._fail(record, started, 499, "the client closed the connection before the answer was ready; "
                              f"generation stopped after {job.completion_tokens} tokens", headers=headers)
        if job.finish_reason not in ("stop", "length"):
            status = 504 if job.finish_reason == "timeout" else job.status
            return self._fail(record, started, status, job.text, kind="server_error" if status >= 500 else "invalid_request_error", headers=headers)
        self._done(record, job, started)
        return JSONResponse({"id": rid, "object": self.kind, "created": int(time.time()), "model": body.model,
                             "choices": [self._choice(job.text, job.finish_reason, body)], "usage": _usage(job),
                             **({"sources": sources} if sources is not None else {})}, headers=headers)

    async def _proxied(self, body, target: Target, record: dict, started: float, headers: dict):
        payload = remote.outgoing(body, self.endpoint, target.remote, target.system_prompt)
        if body.stream:
            async def events():
                async for line in remote.stream(self.endpoint, payload, target.remote, self.limits.timeout, body.model, record, started):
                    yield line
                record.update(latency_ms=(time.perf_counter() - started) * 1000)
                self._record(record)

            return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
        try:
            status, answer, passed = await remote.forward(self.endpoint, payload, target.remote, self.limits.timeout)
        except remote.Unreachable as err:
            return self._fail(record, started, 502, f"model '{record['model']}' is hosted at {target.remote.base_url}, "
                              f"which could not answer: {err}", kind="server_error", headers=headers)
        if status != 200:
            message = str((answer.get("error") or {}).get("message", answer))[:500]
            return self._fail(record, started, status, f"the provider of '{record['model']}' answered HTTP {status}: {message}",
                              kind="rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error",
                              headers={**headers, **passed})
        usage = answer.get("usage") or {}
        choices = answer.get("choices") or [{}]
        text = (choices[0].get("message") or {}).get("content") if self.endpoint == "chat" else choices[0].get("text")
        record.update(status=200, latency_ms=(time.perf_counter() - started) * 1000, prompt_tokens=usage.get("prompt_tokens", 0),
                      completion_tokens=usage.get("completion_tokens", 0), response=text, ttft_ms=None)
        self._record(record)
        return JSONResponse({**answer, "id": record["id"], "model": body.model}, headers=headers)

    def _resolve(self, body):
        """The target model; a router name first picks a route by the request's content."""
        router, decision = self.catalog.router, None
        name = body.model
        if router is not None and name == router.name:
            decision = router.route(_question(body), body.metadata)
            name = decision.model
        return self.catalog.resolve(name, body.user), decision

    def _prompt(self, body, target: Target) -> tuple[str, list[dict] | None]:
        """The prompt text, and the knowledge-base sources put into it (None without a knowledge base)."""
        if self.endpoint == "completion":
            return body.prompt, None
        messages = [m.plain() for m in body.messages]
        sources = None
        knowledge = self.catalog.knowledge_for(target)
        if knowledge is not None and any(m["role"] == "user" for m in messages):
            from tuneloop.rag.template import augment
            from tuneloop.rag.template import sources as cited

            hits = knowledge.search(_question(body), k=self.catalog.knowledge_k)
            messages, sources = augment(messages, hits), cited(hits)
        # A model fine-tuned with a system prompt is served with it unless the client sends its own.
        if target.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": target.system_prompt})
        return render_prompt(target.engine.tokenizer, messages, body.functions() if body.calls_tools() else None), sources

    async def _events(self, job: Generation, events: asyncio.Queue, deadline: float) -> AsyncIterator[str]:
        """Text deltas as they come; ends when the job is done, failed or out of time (job.finish_reason says)."""
        try:
            while True:
                try:
                    kind, payload = await asyncio.wait_for(events.get(), max(deadline - time.perf_counter(), 0.001))
                except asyncio.TimeoutError:
                    job.cancelled, job.finish_reason = True, "timeout"
                    job.text = (f"the request ran out of time ({self.limits.timeout:g} s, the server's --timeout); the server "
                                f"is busy or slow: retry, or start it with a longer --timeout")
                    return
                if kind == "delta":
                    yield payload
                elif kind == "error":
                    job.text = payload
                    return
                else:
                    return
        finally:
            if not job.finished:
                job.cancelled = True  # the client went away: stop generating for it

    async def _stream(self, body, job: Generation, events, record, started, deadline, rid, sources) -> AsyncIterator[str]:
        created = int(time.time())

        def chunk(choice: dict, **extra) -> str:
            payload = {"id": rid, "object": f"{self.kind}.chunk" if self.endpoint == "chat" else self.kind,
                       "created": created, "model": body.model, "choices": [choice] if choice else [], **extra}
            return f"data: {json.dumps(payload)}\n\n"

        tools = ToolStream({t.function.name for t in body.tools}) if self.endpoint == "chat" and body.calls_tools() else None
        if self.endpoint == "chat":
            yield chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        async for delta in self._events(job, events, deadline):
            for part in tools.feed(delta) if tools else [{"content": delta}]:
                yield chunk(self._delta(part))
        if job.finish_reason in ("stop", "length"):
            for part in tools.finish() if tools else []:
                yield chunk(self._delta(part))
            finish = "tool_calls" if tools and tools.calls and job.finish_reason == "stop" else job.finish_reason
            yield chunk(self._delta({}, finish), **({"sources": sources} if sources is not None else {}))
            if body.stream_options and body.stream_options.include_usage:
                yield chunk({}, usage=_usage(job))
            self._done(record, job, started)
        else:
            yield f"data: {json.dumps({'error': {'message': job.text, 'type': 'server_error'}})}\n\n"
            self._fail(record, started, 504 if job.finish_reason == "timeout" else job.status, job.text)
        yield "data: [DONE]\n\n"

    def _choice(self, text: str, finish: str | None, body) -> dict[str, Any]:
        """The whole answer's choice: a chat message (tool calls parsed out of it) or completion text."""
        if self.endpoint == "chat":
            answer, finish = message(text, body, finish)
            return {"index": 0, "message": answer, "finish_reason": finish, "logprobs": None}
        return {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}

    def _delta(self, part: dict, finish: str | None = None) -> dict[str, Any]:
        """One streamed choice: a content or tool-call delta (chat), or text (completions)."""
        if self.endpoint == "chat":
            return {"index": 0, "delta": part if part.get("content") != "" else {}, "finish_reason": finish, "logprobs": None}
        return {"index": 0, "text": part.get("content", ""), "finish_reason": finish, "logprobs": None}

    def _done(self, record: dict, job: Generation, started: float) -> None:
        record.update(status=200, latency_ms=(time.perf_counter() - started) * 1000, completion_tokens=job.completion_tokens,
                      response=job.text, ttft_ms=((job.first_token_at or started) - started) * 1000)
        self._record(record)

    def _fail(self, record: dict, started: float, status: int, message: str, kind: str = "invalid_request_error",
              code: str | None = None, headers: dict | None = None, param: str | None = None) -> JSONResponse:
        record.update(status=status, latency_ms=(time.perf_counter() - started) * 1000, error=message)
        self._record(record)
        return error(status, message, kind, code, headers, param=param)

    def _record(self, record: dict) -> None:
        self.metrics.observe(record, self.endpoint)
        if self.log is not None:
            self.log.add(record)


async def _watch(job: Generation, disconnected: Callable[[], Awaitable[bool]], gone: asyncio.Event, events: asyncio.Queue,
                 every: float = 0.5) -> None:
    """Cancel `job` once its client has disconnected (checked every `every` seconds while it runs)."""
    while not job.finished:
        if await disconnected():
            gone.set()
            job.cancelled = True  # the engine drops it at its next step
            events.put_nowait(("gone", None))  # and the response stops waiting for it now
            return
        await asyncio.sleep(every)


def _question(body) -> str:
    """What the request asks: the last user message, or the completion prompt."""
    if isinstance(body, CompletionRequest):
        return body.prompt
    return next((m.text() for m in reversed(body.messages) if m.role == "user"), "")


def _handoff(events: asyncio.Queue):
    """An `emit` for the engine thread: puts events on this request's queue in the event loop's thread."""
    loop = asyncio.get_running_loop()

    def emit(kind: str, payload: Any) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, (kind, payload))
        except RuntimeError:  # the loop has closed (server stopped under this request): nobody is listening
            pass

    return emit


def _usage(job: Generation) -> dict[str, int]:
    return {"prompt_tokens": len(job.prompt_ids), "completion_tokens": job.completion_tokens,
            "total_tokens": len(job.prompt_ids) + job.completion_tokens}
