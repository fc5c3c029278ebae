"""Jobs: the fine-tuning jobs of the jobs API. The page creates a job the way any client does (upload the
file to /v1/files, then POST /v1/fine_tuning/jobs), and follows its events and checkpoints as they come."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from tuneloop.dashboard.render import gathered, not_found, page
from tuneloop.dashboard.sources import Sources
from tuneloop.jobs.spec import ID


def add(router: APIRouter, sources: Sources) -> None:
    @router.get("/jobs")
    async def jobs(request: Request, after: str | None = Query(None, max_length=ID)):
        if sources.jobs is None:
            return page(request, "jobs.html", title="Jobs", enabled=False, jobs=[], more=False, models=[], base="")

        def gather() -> dict:
            listed, more = sources.jobs.jobs(after, 50)
            models = sorted({m["name"] for m in sources.registry.models()} | set(sources.jobs.model_names()))
            return {"jobs": listed, "more": more, "models": models}

        base = sources.catalog.base if sources.catalog is not None else ""
        return page(request, "jobs.html", title="Jobs", enabled=True, base=base, runs_jobs=sources.runs_jobs, **await run_in_threadpool(gather))

    @router.get("/jobs/{job_id}")
    async def job(request: Request, job_id: str = PathParam(min_length=1, max_length=ID)):
        if sources.jobs is None:
            return not_found(request, "this server runs without the jobs API (--no-jobs)")
        return await gathered(request, "job.html", lambda: {"job": sources.jobs.job(job_id), "checkpoints": sources.jobs.checkpoints(job_id)},
                              title=f"Job {job_id}")
