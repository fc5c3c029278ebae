"""Traffic: the monitor report over a chosen window (requests, latency percentiles, errors, reference-free
quality, per model and variant; alert rules; drift of one served version on demand) and the A/B routes'
weights, which the page edits through PUT /admin/routes (a gradual rollout)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool

from tuneloop.dashboard.render import page
from tuneloop.dashboard.sources import Sources
from tuneloop.dashboard.traffic_stats import WINDOWS, window_summary
from tuneloop.errors import TuneloopError
from tuneloop.monitor import checks
from tuneloop.monitor.report import COLUMNS
from tuneloop.monitor.sources import task_lookup


def add(router: APIRouter, sources: Sources) -> None:
    @router.get("/traffic")
    async def traffic(request: Request, window: str = Query("24h", pattern="^(" + "|".join(WINDOWS) + ")$"),
                      drift: str = Query("", max_length=300)):
        def gather() -> dict:
            span = WINDOWS[window]
            stats = window_summary(sources.requests, span, task_lookup(sources.registry), sources.monitor.alerts)
            drift_result, drift_problem = None, None
            if drift:
                since = dt.datetime.now(dt.UTC) - span if span else None
                try:
                    drift_result = checks.drift(sources.requests, sources.registry, drift, sources.monitor.drift, since=since)
                except (TuneloopError, ValueError, KeyError, OSError) as err:
                    drift_problem = str(err)
            routes = sources.catalog.routes.to_dict() if sources.catalog is not None else {}
            return {**stats, "drift_result": drift_result, "drift_problem": drift_problem, "routes": routes,
                    "models": [m["name"] for m in sources.registry.models()]}

        return page(request, "traffic.html", title="Traffic", window=window, windows=list(WINDOWS), drift=drift,
                    columns=COLUMNS, rules=sources.monitor.alerts, served=sources.catalog is not None,
                    **await run_in_threadpool(gather))
