"""Registry: models, versions with their lineage, aliases with their audit history; promote (point an alias
at a version), move an alias and roll it back, each with the reason asked for and written to the history."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from tuneloop.dashboard.render import back, gathered, page
from tuneloop.dashboard.sources import Sources
from tuneloop.errors import TuneloopError

Name = PathParam(min_length=1, max_length=256)
Reason = Form(..., min_length=3, max_length=1000)
Actor = Form("", max_length=100)


def actor(given: str) -> str:
    name = "".join(c for c in given if c.isprintable()).strip()
    return f"dashboard:{name}" if name else "dashboard"


def add(router: APIRouter, sources: Sources) -> None:
    registry = sources.registry

    @router.get("/registry")
    async def models(request: Request):
        return page(request, "registry.html", title="Registry", models=await run_in_threadpool(registry.models))

    @router.get("/registry/{name}")
    async def model(request: Request, name: str = Name):
        def gather() -> dict:
            versions = registry.versions(name)
            if not versions:
                raise TuneloopError(f"no model {name!r} in the registry")
            aliases = registry.aliases(name)
            return {"name": name, "versions": list(reversed(versions)), "aliases": aliases,
                    "history": list(reversed(registry.history(name)))}

        return await gathered(request, "model.html", gather, title=f"Model {name}")

    @router.post("/registry/{name}/alias")
    async def set_alias(name: str = Name, alias: str = Form(..., min_length=1, max_length=64),
                        version: int = Form(..., ge=1, le=10**9), reason: str = Reason, who: str = Actor):
        try:
            await run_in_threadpool(registry.set_alias, name, alias.strip(), version, actor=actor(who), reason=reason.strip())
        except TuneloopError as err:
            return back(f"/ui/registry/{quote(name)}", problem=str(err))
        return back(f"/ui/registry/{quote(name)}", done=f"{name}@{alias.strip()} now points at version {version}")

    @router.post("/registry/{name}/rollback")
    async def rollback(name: str = Name, alias: str = Form(..., min_length=1, max_length=64), reason: str = Reason,
                       who: str = Actor):
        try:
            event = await run_in_threadpool(registry.rollback, name, alias.strip(), actor=actor(who), reason=reason.strip())
        except TuneloopError as err:
            return back(f"/ui/registry/{quote(name)}", problem=str(err))
        return back(f"/ui/registry/{quote(name)}", done=f"{name}@{alias.strip()} rolled back to version {event['to_version']}")
