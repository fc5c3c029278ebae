"""Who may do what on the HTTP server: API keys that may change state, read-only keys, and the dashboard's
session cookie that stands for a key.

A request is authenticated by `Authorization: Bearer KEY` or by the session cookie set when a person signs
in to the dashboard with a key. The cookie holds an HMAC of the key, never the key itself; it is HttpOnly and
SameSite=Strict, and a request that changes state on the strength of the cookie must also come from the
server's own pages (its Origin names this host), so another site cannot make a signed-in browser act.
No keys configured: everyone may do everything (as the API without --api-key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field

COOKIE = "tuneloop_session"
WRITE, READ = "write", "read"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Access:
    write_keys: list[str] = field(default_factory=list)
    read_keys: list[str] = field(default_factory=list)
    # Sessions last as long as the secret: per process unless TUNELOOP_UI_SECRET names one (several servers).
    secret: bytes = field(default_factory=lambda: os.environ.get("TUNELOOP_UI_SECRET", "").encode() or secrets.token_bytes(32))

    @property
    def open(self) -> bool:
        return not self.write_keys and not self.read_keys

    def role_of_key(self, key: str | bytes) -> str | None:
        given = key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key
        # Bytes against bytes, every key compared: no header value can make this raise or leak by timing.
        write = any([secrets.compare_digest(given, k.encode()) for k in self.write_keys])
        read = any([secrets.compare_digest(given, k.encode()) for k in self.read_keys])
        return WRITE if write else READ if read else None

    def session_token(self, key: str) -> str:
        return hmac.new(self.secret, key.encode(), hashlib.sha256).hexdigest()

    def role_of_session(self, token: str) -> str | None:
        given = token.encode("ascii", "replace")
        for role, keys in ((WRITE, self.write_keys), (READ, self.read_keys)):
            if any([secrets.compare_digest(given, self.session_token(k).encode()) for k in keys]):
                return role
        return None

    def role(self, authorization: bytes, cookie: str | None) -> tuple[str | None, bool]:
        """(role or None, whether the cookie carried it)."""
        if self.open:
            return WRITE, False
        if authorization:
            return self.role_of_key(authorization.removeprefix(b"Bearer ").strip()), False
        if cookie:
            return self.role_of_session(cookie), True
        return None, False


def session_cookie(headers: dict[bytes, bytes]) -> str | None:
    """The session cookie's value from raw ASGI headers (None when absent or malformed)."""
    raw = headers.get(b"cookie", b"").decode("latin-1")
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and 0 < len(value) <= 128:
            return value
    return None


def same_origin(headers: dict[bytes, bytes]) -> bool:
    """Whether a browser's request comes from this server's own pages: Origin (or, failing it, Referer)
    names the Host the request was sent to."""
    host = headers.get(b"host", b"").decode("latin-1")
    origin = headers.get(b"origin", b"").decode("latin-1") or headers.get(b"referer", b"").decode("latin-1")
    if not host or not origin:
        return False
    return origin.split("://", 1)[-1].split("/", 1)[0] == host
