"""The OpenAI error envelope: how every HTTP error leaves tuneloop's server, whichever route raised it.

The official client parses `{"error": {"message", "type", "param", "code"}}`; FastAPI's default
`{"detail": ...}` would reach it as an unreadable error. Any stage that mounts routes uses this.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse


def error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
          headers: dict[str, str] | None = None, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status, headers=headers)
