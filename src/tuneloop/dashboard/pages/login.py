"""Sign in with an API key (the session cookie stands for it; see access.py), and sign out."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse

from tuneloop.access import COOKIE
from tuneloop.dashboard.render import page
from tuneloop.dashboard.sources import Sources


def safe_next(target: str) -> str:
    """Only a dashboard page of this server: never another site (an open redirect)."""
    return target if target.startswith("/ui") and not target.startswith("//") and "\\" not in target and len(target) < 2000 else "/ui"


def add(router: APIRouter, sources: Sources) -> None:
    @router.get("/login")
    def login_form(request: Request, next: str = "/ui"):
        return page(request, "login.html", title="Sign in", next=safe_next(next), open=sources.access.open, wrong=False)

    @router.post("/login")
    def login(request: Request, key: str = Form("", max_length=512), next: str = Form("/ui", max_length=2000)):
        target = safe_next(next)
        if sources.access.open:
            return RedirectResponse(target, status_code=303)
        if not key or sources.access.role_of_key(key.strip()) is None:
            return page(request, "login.html", status=401, title="Sign in", next=target, open=False, wrong=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(COOKIE, sources.access.session_token(key.strip()), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/", max_age=7 * 24 * 3600)
        return response

    @router.get("/logout")
    def logout():
        response = RedirectResponse("/ui/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response
