"""The /ui router: every page of the dashboard, and its static files (shipped in the package)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import Response

from tuneloop.dashboard.pages import home, jobs, login, playground, registry, review, runs, traffic
from tuneloop.dashboard.sources import Sources

STATIC = {"style.css": "text/css; charset=utf-8", "dashboard.js": "text/javascript; charset=utf-8"}


def dashboard_router(sources: Sources) -> APIRouter:
    router = APIRouter(prefix="/ui", include_in_schema=False)
    for part in (login, home, runs, registry, jobs, traffic, review, playground):
        part.add(router, sources)

    @router.get("/static/{name}")
    def static(name: str = PathParam(max_length=64)):
        if name not in STATIC:
            return Response(status_code=404)
        body = files("tuneloop.dashboard").joinpath("static", name).read_bytes()
        return Response(body, media_type=STATIC[name], headers={"cache-control": "max-age=300"})

    return router
