"""What every request passes before any route sees it: a closed door while the server drains for shutdown,
the API key (or the dashboard's session cookie, see access.py) on /v1, /admin and /ui, and a cap on the
body's size. Each answers in the OpenAI error envelope; a dashboard page asked for without a key is sent
to its sign-in page instead.

Pure ASGI middleware (no task group in between), so an oversized body is refused from its Content-Length
(or, when it is sent chunked, as soon as the bytes read pass the cap) without being read into memory,
parsed or tokenized, and the refusal reaches the client as itself.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from urllib.parse import urlencode

from starlette.exceptions import HTTPException

from tuneloop.access import SAFE_METHODS, WRITE, Access, same_origin, session_cookie

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


PROTECTED = ("/v1/", "/admin/", "/ui")
OPEN = ("/ui/login", "/ui/logout", "/ui/static/")


def _redirect(location: str) -> tuple[dict, dict]:
    return ({"type": "http.response.start", "status": 303,
             "headers": [(b"location", location.encode("latin-1", "replace")), (b"content-length", b"0")]},
            {"type": "http.response.body", "body": b""})


class Guards:
    """`limit_for(path) -> bytes allowed`; `draining`: set when shutdown begins (see cli serve); `access`:
    the keys /v1, /admin and /ui accept, and which of them may only read (no keys: no key needed)."""

    def __init__(self, app, limit_for: Callable[[str], int], draining: threading.Event, access: Access):
        self.app, self.limit_for, self.draining, self.access = app, limit_for, draining, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if self.draining.is_set() and scope["path"] != "/health":
            start, body = _envelope(503, "the server is shutting down; retry on another instance or shortly",
                                    "server_error", "shutting_down", [(b"retry-after", b"5"), (b"connection", b"close")])
            await send(start)
            return await send(body)
        headers = dict(scope.get("headers") or [])
        refused = self._refused(scope, headers)
        if refused is not None:
            for message in refused:
                await send(message)
            return
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

    def _refused(self, scope: Scope, headers: dict[bytes, bytes]) -> tuple[dict, dict] | None:
        path, method = scope["path"], scope.get("method", "GET")
        role, by_cookie = self.access.role(headers.get(b"authorization", b""), session_cookie(headers))
        scope.setdefault("state", {})["role"] = role  # what the dashboard's pages offer (request.state.role)
        if not path.startswith(PROTECTED) or path.startswith(OPEN):
            return None
        if path.startswith("/ui") and method not in SAFE_METHODS and not same_origin(headers):
            # The dashboard's forms are "simple" requests a browser sends cross-site without asking: refused
            # from any page but this server's own, with or without keys (an open server on 127.0.0.1 too).
            return _envelope(403, "the dashboard's actions are accepted only from its own pages (the request's "
                             "Origin is another site, or missing)", "invalid_request_error", "cross_origin")
        if self.access.open:
            return None
        if role is None:
            if path.startswith("/ui") and method in SAFE_METHODS:
                target = path + ("?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else "")
                return _redirect("/ui/login?" + urlencode({"next": target}))
            return _envelope(401, "invalid or missing API key (send Authorization: Bearer KEY, or sign in at /ui/login)",
                             "invalid_request_error", "invalid_api_key")
        if method in SAFE_METHODS:
            return None
        if role != WRITE:
            return _envelope(403, "this key may only read; changing anything needs a key given with --api-key",
                             "invalid_request_error", "read_only_key")
        if by_cookie and not same_origin(headers):
            return _envelope(403, "a signed-in browser may change state only from this server's own pages "
                             "(the request's Origin is another site); API clients send Authorization: Bearer KEY",
                             "invalid_request_error", "cross_origin")
        return None

    async def _too_large(self, send: Send, limit: int) -> None:
        start, body = _envelope(413, f"the request body is larger than this server accepts ({limit:,} bytes)",
                                "invalid_request_error", "request_too_large", [(b"connection", b"close")])
        await send(start)
        await send(body)
