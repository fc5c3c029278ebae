"""The OpenAI files and fine-tuning jobs routes, mounted on the serving app (same API keys).

A file that fails validation is stored anyway (status "error", the report in status_details); a job
that uses it fails with that report as its error. Jobs are only queued here; the worker runs them.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import ValidationError

from tuneloop.errors import TuneloopError
from tuneloop.http import error
from tuneloop.jobs.spec import JobRequest
from tuneloop.jobs.stages import Stages
from tuneloop.jobs.store import FINAL, JobStore, NotFound
from tuneloop.models import resolve_model

PURPOSES = ("fine-tune", "batch", "assistants", "user_data", "evals")


def jobs_router(store: JobStore, stages: Stages) -> APIRouter:
    router = APIRouter()
    _file_routes(router, store, stages)
    _job_routes(router, store)
    return router


def _file_routes(router: APIRouter, store: JobStore, stages: Stages) -> None:
    @router.post("/v1/files")
    async def upload(file: UploadFile = File(...), purpose: str = Form(...)):
        if purpose not in PURPOSES:
            return error(400, f"purpose '{purpose}' is not one of {', '.join(PURPOSES)}", code="invalid_purpose")
        content = await file.read()
        if not content:
            return error(400, f"{file.filename}: the file is empty")

        def store_checked() -> dict:
            stored = store.add_file(file.filename or "upload.jsonl", purpose, content, "processed", None)
            if purpose == "fine-tune":
                details = stages.check_file(Path(store.file(stored["id"])["path"]))
                store.set_file_status(stored["id"], "error" if details else "processed", details)
            return store.file(stored["id"])

        stored = await run_in_threadpool(store_checked)
        stored.pop("path", None)
        return stored

    @router.get("/v1/files")
    def list_files(purpose: str | None = None) -> dict:
        return {"object": "list", "data": store.files(purpose), "has_more": False}

    @router.get("/v1/files/{file_id}")
    def get_file(file_id: str):
        return _found(lambda: {k: v for k, v in store.file(file_id).items() if k != "path"})

    @router.delete("/v1/files/{file_id}")
    def delete_file(file_id: str):
        return _found(lambda: store.delete_file(file_id))

    @router.get("/v1/files/{file_id}/content")
    def file_content(file_id: str):
        return _found(lambda: FileResponse(store.file(file_id)["path"], media_type="application/octet-stream"))



def _job_routes(router: APIRouter, store: JobStore) -> None:
    @router.post("/v1/fine_tuning/jobs")
    def create_job(body: JobRequest):
        try:
            hyperparameters, method = body.settings()
            training = store.file(body.training_file)
            validation = store.file(body.validation_file) if body.validation_file else None
            resolve_model(body.model)
        except NotFound as err:
            return error(400, f"{err}; upload it first with POST /v1/files", param="training_file", code="invalid_file")
        except (ValueError, ValidationError, TuneloopError) as err:
            return error(400, str(err), code="invalid_request")
        job = store.create_job(model=body.model, training_file=body.training_file, validation_file=body.validation_file,
                               hyperparameters=hyperparameters, method=method, suffix=body.suffix, seed=body.seed or 0)
        store.add_event(job["id"], "Validating training file: " + training["filename"])
        bad = next((f for f in (training, validation) if f and f["status"] == "error"), None)
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
    def list_jobs(after: str | None = None, limit: int = 20) -> dict:
        jobs, more = store.jobs(after, limit)
        return {"object": "list", "data": jobs, "has_more": more}

    @router.get("/v1/fine_tuning/jobs/{job_id}")
    def get_job(job_id: str):
        return _found(lambda: store.job(job_id))

    @router.post("/v1/fine_tuning/jobs/{job_id}/cancel")
    def cancel(job_id: str):
        try:
            job = store.job(job_id)
        except NotFound as err:
            return error(404, str(err))
        if job["status"] in FINAL:
            return error(400, f"job {job_id} has already {job['status']}; only queued or running jobs can be cancelled")
        store.set_status(job_id, "cancelled", only_from=("validating_files", "queued", "running"))
        store.add_event(job_id, "Cancellation requested")
        return store.job(job_id)

    @router.get("/v1/fine_tuning/jobs/{job_id}/events")
    def events(job_id: str, after: str | None = None, limit: int = 20):
        def page() -> dict:
            data, more = store.events(job_id, after, limit)
            return {"object": "list", "data": data, "has_more": more}

        return _found(page)

    @router.get("/v1/fine_tuning/jobs/{job_id}/checkpoints")
    def checkpoints(job_id: str, after: str | None = None, limit: int = 10):
        def page() -> dict:
            data = store.checkpoints(job_id)
            if after:
                ids = [c["id"] for c in data]
                data = data[ids.index(after) + 1:] if after in ids else []
            return {"object": "list", "data": data[:limit], "has_more": len(data) > limit,
                    "first_id": data[0]["id"] if data else None, "last_id": data[:limit][-1]["id"] if data else None}

        return _found(page)


def _found(make):
    try:
        return make()
    except NotFound as err:
        return error(404, str(err))
