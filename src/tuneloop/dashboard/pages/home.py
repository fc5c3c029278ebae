"""The overview: the latest runs, the registry's models and aliases, jobs, and the last day's traffic."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from tuneloop.dashboard.render import page
from tuneloop.dashboard.runs import list_runs
from tuneloop.dashboard.sources import Sources
from tuneloop.dashboard.traffic_stats import window_summary


def add(router: APIRouter, sources: Sources) -> None:
    @router.get("")
    @router.get("/")
    async def overview(request: Request):
        def gather() -> dict:
            runs, total = list_runs(sources.runs_root, 0, 8)
            jobs = sources.jobs.jobs(None, 5)[0] if sources.jobs is not None else None
            traffic = window_summary(sources.requests, dt.timedelta(hours=24))
            return {"runs": runs, "total_runs": total, "models": sources.registry.models(), "jobs": jobs, "traffic": traffic}

        return page(request, "home.html", title="Overview", runs_root=str(sources.runs_root), **await run_in_threadpool(gather))
