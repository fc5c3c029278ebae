"""The OpenAI files and fine-tuning jobs routes, mounted on the serving app (same API keys).

Every parameter is bounded (ids, cursors, page sizes, hyperparameters). An uploaded file is stored under a
server-made id (the uploader's name is metadata only) and checked before it is listed; one that fails
the check is kept with status "error" and the report in status_details, and a job that names it fails
with that report as its error. Jobs are only queued here; the worker runs them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import ValidationError

from tuneloop.errors import TuneloopError
from tuneloop.http import error
from tuneloop.jobs.spec import ID, JobRequest
from tuneloop.jobs.stages import Stages
from tuneloop.jobs.store import ACTIVE, FINAL, JobStore, NotFound
from tuneloop.models import resolve_model

PURPOSES = ("fine-tune", "batch", "assistants", "user_data", "evals")
LISTED = (*PURPOSES, "fine-tune-results")  # results are written by the server (a job's metrics CSV), never uploaded
FileId = PathParam(min_length=1, max_length=ID)
JobId = PathParam(min_length=1, max_length=ID)


def jobs_router(store: JobStore, stages: Stages) -> APIRouter:
    router = APIRouter()
    _file_routes(router, store, stages)
    _job_routes(router, store)
    return router


def _file_routes(router: APIRouter, store: JobStore, stages: Stages) -> None:
    @router.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: Literal[PURPOSES] = Form(...)):  # type: ignore[valid-type]
        content = await file.read()
        name = display_name(file.filename)
        if not content:
            return error(400, f"{name}: the file is empty", param="file")

        def check_and_store() -> dict:
            # Checked before it is listed: a fine-tuning file is `processed` only when every row passed the
            # data stage's checks, else `error` with the report (kept, so the user can read what to fix).
            staged = store.stage_file(content, purpose)
            details = None
            if purpose == "fine-tune":
                try:
                    details = stages.check_file(staged.path)
                except Exception as err:  # an unreadable upload is the uploader's problem, reported, not a 500
                    details = f"{name}: could not be read as JSONL ({err.__class__.__name__}: {err})"
            return store.add_file(staged, name, purpose, "error" if details else "processed", details)

        return await run_in_threadpool(check_and_store)

    @router.get("/v1/files")
    def list_files(purpose: Literal[LISTED] | None = None) -> dict:  # type: ignore[valid-type]
        return {"object": "list", "data": store.files(purpose), "has_more": False}

    @router.get("/v1/files/{file_id}")
    def get_file(file_id: str = FileId):
        return _found(lambda: {k: v for k, v in store.file(file_id).items() if k != "path"})

    @router.delete("/v1/files/{file_id}")
    def delete_file(file_id: str = FileId):
        return _found(lambda: store.delete_file(file_id))

    @router.get("/v1/files/{file_id}/content")
    def file_content(file_id: str = FileId):
        def content():
            path = Path(store.file(file_id)["path"])
            if not path.is_file():
                raise NotFound(f"file '{file_id}': its content is gone from the server's disk")
            return FileResponse(path, media_type="application/octet-stream")

        return _found(content)


def display_name(given: str | None) -> str:
    """The uploader's file name, as metadata only (files are stored under their id): its last path part,
    without control characters, at most 255 characters; "upload" when nothing usable is left."""
    name = "".join(c for c in (given or "").replace("\\", "/").rsplit("/", 1)[-1] if c.isprintable())[:255].strip()
    return name if name not in ("", ".", "..") else "upload"


def _job_routes(router: APIRouter, store: JobStore) -> None:
    @router.post("/v1/fine_tuning/jobs")
    def create_job(body: JobRequest):
        try:
            hyperparameters, method = body.settings()
            training = store.file(body.training_file)
        except NotFound as err:
            return error(400, f"{err}; upload it first with POST /v1/files", param="training_file", code="invalid_file")
        try:
            validation = store.file(body.validation_file) if body.validation_file else None
        except NotFound as err:
            return error(400, f"{err}; upload it first with POST /v1/files", param="validation_file", code="invalid_file")
        for param, stored in (("training_file", training), ("validation_file", validation)):
            if stored is not None and stored["purpose"] != "fine-tune":
                return error(400, f"file {stored['id']} was uploaded with purpose '{stored['purpose']}'; training data needs "
                                  f"purpose 'fine-tune' (it is checked on upload)", param=param, code="invalid_file")
        try:
            resolve_model(body.model)
        except (ValueError, ValidationError, TuneloopError) as err:
            return error(400, str(err), param="model", code="invalid_request")
        if body.integrations and importlib.util.find_spec("wandb") is None:
            return error(400, "integrations: this server cannot log to W&B (wandb is not installed: pip install "
                              "'tuneloop[tracking]' where the server runs)", param="integrations")
        job = store.create_job(model=body.model, training_file=body.training_file, validation_file=body.validation_file,
                               hyperparameters=hyperparameters, method=method, suffix=body.suffix, seed=body.seed or 0,
                               meta=body.metadata, integrations=[i.model_dump() for i in body.integrations or []] or None)
        store.add_event(job["id"], "Validating training file: " + training["filename"])
        bad = next((f for f in (training, validation) if f and f["status"] != "processed"), None)
        if bad is not None:
            param = "training_file" if bad is training else "validation_file"
            store.set_status(job["id"], "failed", error={"code": "invalid_file", "param": param,
                                                         "message": f"{bad['filename']} ({bad['id']}): {bad['status_details']}"})
            store.add_event(job["id"], f"File validation failed: {bad['status_details']}", level="error")
        else:
            store.set_status(job["id"], "queued", only_from=("validating_files",))
            store.add_event(job["id"], "Files validated; the job is queued")
        return store.job(job["id"])

    @router.get("/v1/fine_tuning/jobs")
    def list_jobs(request: Request, after: str | None = Query(None, max_length=ID), limit: int = Query(20, ge=1, le=1000)):
        try:
            wanted = metadata_filter(request.query_params.multi_items())
        except ValueError as err:
            return error(400, str(err), param="metadata")
        jobs, more = store.jobs(after, limit, wanted)
        return {"object": "list", "data": jobs, "has_more": more}

    @router.get("/v1/fine_tuning/jobs/{job_id}")
    def get_job(job_id: str = JobId):
        return _found(lambda: store.job(job_id))

    @router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel(job_id: str = JobId):
        try:
            job = store.job(job_id)
        except NotFound as err:
            return error(404, str(err))
        if job["status"] in FINAL:
            return error(400, f"job {job_id} has already {job['status']}; only queued, running or paused jobs can be cancelled")
        store.set_status(job_id, "cancelled", only_from=ACTIVE)
        store.add_event(job_id, "Cancellation requested")
        return store.job(job_id)

    @router.post("/v1/fine_tuning/jobs/{job_id}/pause")
    def pause(job_id: str = JobId):
        return _found(lambda: _pause(store, store.job(job_id)))

    @router.post("/v1/fine_tuning/jobs/{job_id}/resume")
    def resume(job_id: str = JobId):
        return _found(lambda: _resume(store, store.job(job_id)))

    @router.get("/v1/fine_tuning/jobs/{job_id}/events")
    def events(job_id: str = JobId, after: str | None = Query(None, pattern=r"^ftevent-\d{1,18}$"),
               limit: int = Query(20, ge=1, le=1000)):
        def page() -> dict:
            data, more = store.events(job_id, after, limit)
            return {"object": "list", "data": data, "has_more": more}

        return _found(page)

    @router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def checkpoints(job_id: str = JobId, after: str | None = Query(None, max_length=ID), limit: int = Query(10, ge=1, le=1000)):
        def page() -> dict:
            data = store.checkpoints(job_id)
            if after:
                ids = [c["id"] for c in data]
                data = data[ids.index(after) + 1:] if after in ids else []
            return {"object": "list", "data": data[:limit], "has_more": len(data) > limit,
                    "first_id": data[0]["id"] if data else None, "last_id": data[:limit][-1]["id"] if data else None}

        return _found(page)


def _pause(store: JobStore, job: dict):
    """A running job checkpoints at the end of its current step and stops (`pausing`, then `paused`); a queued one
    is held back at once."""
    job_id = job["id"]
    if store.set_status(job_id, "paused", only_from=("validating_files", "queued")):
        store.add_event(job_id, "The job is paused before it started; resume it to queue it again")
    elif store.set_status(job_id, "pausing", only_from=("running",)):
        store.add_event(job_id, "Pause requested: the job stops after a checkpoint at the end of its current step")
    elif job["status"] not in ("pausing", "paused"):
        return error(400, f"job {job_id} is {job['status']}; only queued or running jobs can be paused")
    return store.job(job_id)


def _resume(store: JobStore, job: dict):
    job_id = job["id"]
    if job["status"] == "pausing":
        return error(400, f"job {job_id} is still pausing (its trainer is writing a checkpoint); resume it once it is paused")
    if not store.set_status(job_id, "queued", only_from=("paused",)):
        return error(400, f"job {job_id} is {job['status']}; only paused jobs can be resumed")
    store.add_event(job_id, "The job is resumed and queued; it continues from its last checkpoint")
    return store.job(job_id)


def metadata_filter(params: list[tuple[str, str]]) -> dict[str, str] | None:
    """`metadata[k]=v` query pairs as a filter (OpenAI's syntax); `metadata=null`: jobs without metadata (`{}`)."""
    wanted: dict[str, str] = {}
    for key, value in params:
        if key == "metadata":
            if value != "null":
                raise ValueError("filter by metadata with metadata[KEY]=VALUE, or metadata=null for jobs without any")
            return {}
        if key.startswith("metadata[") and key.endswith("]") and 0 < len(key) - 10 <= 64:
            wanted[key[9:-1]] = value[:512]
    return wanted or None


def _found(make):
    try:
        return make()
    except NotFound as err:
        return error(404, str(err))
