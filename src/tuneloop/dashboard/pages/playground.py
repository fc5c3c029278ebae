"""Playground: chat with any served model, alias or route, side by side with another. The page sends
OpenAI chat requests to this server's /v1 (static/dashboard.js), so what it shows is what clients get."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from tuneloop.dashboard.render import page
from tuneloop.dashboard.sources import Sources


def add(router: APIRouter, sources: Sources) -> None:
    @router.get("/playground")
    async def playground(request: Request):
        def names() -> list[str]:
            if sources.catalog is None:
                return []
            # Every name a client may send, and each registered version, so two versions can be compared.
            versions = [v["ref"] for v in sources.registry.versions()][-200:]
            return list(dict.fromkeys([*sources.catalog.listing(), *reversed(versions)]))

        names = await run_in_threadpool(names)
        return page(request, "playground.html", title="Playground", models=names, served=sources.catalog is not None)
