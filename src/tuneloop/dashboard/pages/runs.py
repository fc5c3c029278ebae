"""Runs: every data / train / eval run under the runs root; one run's lineage, data report, live loss curve,
evaluation table with intervals and gates, samples side by side, confusion matrices."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from tuneloop.dashboard import views
from tuneloop.dashboard.render import gathered, not_found, page, pages
from tuneloop.dashboard.runs import RunNotFound, artifact, list_runs, open_run, read_jsonl
from tuneloop.dashboard.sources import Sources
from tuneloop.layout import TrainDir

RunId = Query(min_length=1, max_length=512)
Folder = Query("", max_length=64)


def add(router: APIRouter, sources: Sources) -> None:
    @router.get("/runs")
    async def runs(request: Request, page_number: int = Query(1, alias="page", ge=1, le=1_000_000),
                   q: str = Query("", max_length=200)):
        def gather() -> dict:
            found, total = list_runs(sources.runs_root, 0, None, q)
            paging = pages(total, page_number)
            return {"runs": found[paging["offset"]:paging["offset"] + paging["per_page"]], "paging": paging}

        return page(request, "runs.html", title="Runs", q=q, runs_root=str(sources.runs_root), **await run_in_threadpool(gather))

    @router.get("/runs/{run_id:path}")
    async def run(request: Request, run_id: str, samples: int = Query(1, ge=1, le=1_000_000)):
        def gather() -> dict:
            found = open_run(sources.runs_root, run_id)
            stages = []
            for stage in found.stages:
                view = {"data": views.data_view, "train": views.train_view, "monitor": views.monitor_view}.get(stage.kind)
                detail = views.eval_view(stage, samples) if stage.kind == "eval" else view(stage) if view else {}
                stages.append({"stage": stage, "lineage": views.lineage(stage), "view": detail})
            return {"run": found, "stages": stages}

        return await gathered(request, "run.html", gather, title=f"Run {run_id}")

    @router.get("/run-file")
    def run_file(request: Request, run: str = RunId, stage: str = Folder, name: str = Query(min_length=1, max_length=128)):
        try:
            path = artifact(open_run(sources.runs_root, run).stage(stage), name)
        except RunNotFound as err:
            return not_found(request, str(err))
        kind = "text/html; charset=utf-8" if name.endswith(".html") else "image/png"
        # A report opens as its own page; its inline script runs sandboxed, away from the dashboard's cookie.
        return FileResponse(path, media_type=kind, headers={"content-security-policy": "sandbox allow-scripts",
                                                            "cache-control": "no-cache"})

    @router.get("/run-metrics")
    def run_metrics(run: str = RunId, stage: str = Folder, after: int = Query(0, ge=0, le=10_000_000)):
        """The training's metrics.jsonl from line `after` on, and whether it is still going (the page polls)."""
        try:
            found = open_run(sources.runs_root, run).stage(stage)
        except RunNotFound as err:
            return JSONResponse({"error": {"message": str(err)}}, status_code=404)
        records, upto = read_jsonl(TrainDir(found.path).metrics, after=after, limit=20_000)
        return {"records": records, "next": upto, "running": found.running}
