"""What every request passes before any route sees it: a closed door while the server drains for shutdown,
the API key on /v1 and /admin, and a cap on the body's size. Each answers in the OpenAI error envelope.

Pure ASGI middleware (no task group in between), so an oversized body is refused from its Content-Length
(or, when it is sent chunked, as soon as the bytes read pass the cap) without being read into memory,
parsed or tokenized, and the refusal reaches the client as itself.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable

from starlette.exceptions import HTTPException

Scope, Receive, Send = dict, Callable, Callable


class BodyTooLarge(HTTPException):
    """Raised from inside the body's reading; an HTTPException so that FastAPI's body parser passes it on."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than this server accepts ({limit:,} bytes)")


def _envelope(status: int, message: str, kind: str, code: str, extra_headers: list[tuple[bytes, bytes]] = ()) -> tuple[dict, dict]:
    body = json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]}
    return start, {"type": "http.response.body", "body": body}


class Guards:
    """`limit_for(path) -> bytes allowed`; `draining`: set when shutdown begins (see cli serve); `api_keys`:
    the bearer keys /v1 and /admin accept (none: no key needed)."""

    def __init__(self, app, limit_for: Callable[[str], int], draining: threading.Event, api_keys: list[str]):
        self.app, self.limit_for, self.draining = app, limit_for, draining
        self.keys = [key.encode() for key in api_keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.draining.is_set() and scope["path"] != "/health":
            start, body = _envelope(503, "the server is shutting down; retry on another instance or shortly",
                                    "server_error", "shutting_down", [(b"retry-after", b"5"), (b"connection", b"close")])
            await send(start)
            return await send(body)
        headers = dict(scope.get("headers") or [])
        if self.keys and scope["path"].startswith(("/v1/", "/admin/")) and not self._authorised(headers.get(b"authorization", b"")):
            start, body = _envelope(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                                    "invalid_request_error", "invalid_api_key")
            await send(start)
            return await send(body)
        limit = self.limit_for(scope["path"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self._too_large(send, limit)
        seen = 0
        started = False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if not started:
                await self._too_large(send, limit)

    def _authorised(self, header: bytes) -> bool:
        # Bytes against bytes: no header value, ASCII or not, can make the comparison raise.
        given = header.removeprefix(b"Bearer ").strip()
        return any(secrets.compare_digest(given, key) for key in self.keys)

    async def _too_large(self, send: Send, limit: int) -> None:
        start, body = _envelope(413, f"the request body is larger than this server accepts ({limit:,} bytes)",
                                "invalid_request_error", "request_too_large", [(b"connection", b"close")])
        await send(start)
        await send(body)
