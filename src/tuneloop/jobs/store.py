"""Files and fine-tuning jobs in tuneloop's database (tables.py), returned in the OpenAI API's object shapes.

The database is the queue: a job is claimed by an atomic `UPDATE ... WHERE status = 'queued'`, so two
workers never take the same job, and queued jobs survive a restart.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tuneloop.artifacts import tuneloop_home
from tuneloop.db import Database
from tuneloop.db.base import as_utc, utcnow
from tuneloop.errors import TuneloopError
from tuneloop.jobs.tables import FineTuningJob, JobCheckpoint, JobEvent, StoredFile
from tuneloop.layout import HomeDir

FINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("validating_files", "queued", "running", "pausing", "paused")  # what cancel may stop


class NotFound(TuneloopError):
    pass


@dataclass(frozen=True)
class StagedFile:
    id: str
    path: Path
    bytes: int


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _ts(value: dt.datetime | None) -> int | None:
    return None if value is None else int(as_utc(value).timestamp())


class JobStore:
    def __init__(self, database: Database | str | None = None, root: Path | None = None):
        self.database = Database.of(database)
        self.engine = self.database.engine
        self.root = root or tuneloop_home()

    # --- files -----------------------------------------------------------------------------------
    def stage_file(self, content: bytes, purpose: str) -> StagedFile:
        """Write an upload under a new id, not yet listed; training data is always read as JSONL."""
        file_id = new_id("file")
        path = HomeDir(self.root).file(file_id, jsonl=purpose == "fine-tune")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return StagedFile(file_id, path, len(content))

    def add_file(self, staged: StagedFile, filename: str, purpose: str, status: str, details: str | None) -> dict:
        """List a staged upload with the outcome of its check."""
        row = StoredFile(id=staged.id, created_at=utcnow(), filename=filename, purpose=purpose, bytes=staged.bytes,
                         path=str(staged.path), status=status, status_details=details)
        with Session(self.engine) as session:
            session.add(row)
            session.commit()
            return file_object(row)

    def file(self, file_id: str) -> dict:
        with Session(self.engine) as session:
            row = session.get(StoredFile, file_id)
            if row is None:
                raise NotFound(f"no file '{file_id}'")
            return file_object(row) | {"path": row.path}

    def set_file_status(self, file_id: str, status: str, details: str | None) -> None:
        with Session(self.engine) as session:
            session.execute(update(StoredFile).where(StoredFile.id == file_id).values(status=status, status_details=details))
            session.commit()

    def files(self, purpose: str | None = None) -> list[dict]:
        query = select(StoredFile).order_by(StoredFile.created_at.desc())
        if purpose:
            query = query.where(StoredFile.purpose == purpose)
        with Session(self.engine) as session:
            return [file_object(row) for row in session.scalars(query)]

    def delete_file(self, file_id: str) -> dict:
        with Session(self.engine) as session:
            row = session.get(StoredFile, file_id)
            if row is None:
                raise NotFound(f"no file '{file_id}'")
            path = Path(row.path)
            if path.parent.name == file_id:  # its own folder (older servers stored files by their name)
                shutil.rmtree(path.parent, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            session.delete(row)
            session.commit()
        return {"id": file_id, "object": "file", "deleted": True}

    # --- jobs ------------------------------------------------------------------------------------
    def create_job(self, **fields: Any) -> dict:
        job_id = new_id("ftjob")
        row = FineTuningJob(id=job_id, created_at=utcnow(), status="validating_files",
                            run_dir=str(HomeDir(self.root).job(job_id).root), **fields)
        with Session(self.engine) as session:
            session.add(row)
            session.commit()
        return self.job(job_id)

    def job(self, job_id: str) -> dict:
        with Session(self.engine) as session:
            row = session.get(FineTuningJob, job_id)
            if row is None:
                raise NotFound(f"no fine-tuning job '{job_id}'")
            return job_object(row)

    def jobs(self, after: str | None = None, limit: int = 20, metadata: dict[str, str] | None = None) -> tuple[list[dict], bool]:
        """Newest first; `after` is the id of the last job of the previous page; `metadata`: only jobs holding every
        pair of it ({} = jobs without metadata)."""
        query = select(FineTuningJob).order_by(FineTuningJob.created_at.desc(), FineTuningJob.id.desc())
        with Session(self.engine) as session:
            rows = list(session.scalars(query))
        if metadata is not None:
            rows = [r for r in rows if (all((r.meta or {}).get(k) == v for k, v in metadata.items()) if metadata else not r.meta)]
        if after:
            ids = [row.id for row in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        return [job_object(row) for row in rows[:limit]], len(rows) > limit

    def update_job(self, job_id: str, **fields: Any) -> None:
        with Session(self.engine) as session:
            session.execute(update(FineTuningJob).where(FineTuningJob.id == job_id).values(**fields))
            session.commit()

    def set_status(self, job_id: str, status: str, *, only_from: tuple[str, ...] | None = None, **fields: Any) -> bool:
        """Move a job to `status` (optionally only from some statuses); False when it was not in one of them."""
        values = {"status": status, **fields}
        if status in FINAL:
            values.setdefault("finished_at", utcnow())
        query = update(FineTuningJob).where(FineTuningJob.id == job_id)
        if only_from:
            query = query.where(FineTuningJob.status.in_(only_from))
        with Session(self.engine) as session:
            changed = session.execute(query.values(**values)).rowcount
            session.commit()
        return bool(changed)

    def claim_next(self, worker: str) -> dict | None:
        """The oldest queued job, now marked running by `worker`; None when the queue is empty."""
        with Session(self.engine) as session:
            queued = session.scalars(select(FineTuningJob.id).where(FineTuningJob.status == "queued")
                                     .order_by(FineTuningJob.created_at, FineTuningJob.id)).all()
        for job_id in queued:
            if self.set_status(job_id, "running", only_from=("queued",), worker=worker, started_at=utcnow(),
                               heartbeat_at=utcnow(), trainer_pid=None):
                return self.job(job_id)
        return None

    def renew(self, job_id: str, worker: str, trainer_pid: int | None = None) -> bool:
        """Renew `worker`'s lease on a running job (and record its trainer); False when the lease is lost:
        the job is no longer running, or another worker has taken it over."""
        values = {"heartbeat_at": utcnow(), **({"trainer_pid": trainer_pid} if trainer_pid is not None else {})}
        query = update(FineTuningJob).where(FineTuningJob.id == job_id, FineTuningJob.worker == worker,
                                            FineTuningJob.status.in_(("running", "pausing", "cancelled")))
        with Session(self.engine) as session:
            changed = session.execute(query.values(**values)).rowcount
            session.commit()
        return bool(changed)

    def orphaned(self, worker_prefix: str) -> list[dict]:
        """Jobs marked running by a worker of an earlier process (it died or was restarted), with the lease."""
        with Session(self.engine) as session:
            rows = session.scalars(select(FineTuningJob).where(FineTuningJob.status.in_(("running", "pausing"))))
            return [job_object(row) | {"worker": row.worker, "trainer_pid": row.trainer_pid,
                                       "heartbeat_at": as_utc(row.heartbeat_at) if row.heartbeat_at else None}
                    for row in rows if not (row.worker or "").startswith(worker_prefix)]

    def run_dir(self, job_id: str) -> Path:
        with Session(self.engine) as session:
            row = session.get(FineTuningJob, job_id)
            return Path(row.run_dir)

    def model_names(self) -> list[str]:
        with Session(self.engine) as session:
            return list(session.scalars(select(FineTuningJob.fine_tuned_model).where(FineTuningJob.status == "succeeded")))

    def model_for(self, name: str) -> str | Path | None:
        """A `ft:...` model name -> the registry ref of its job's model, or a checkpoint's adapter folder."""
        with Session(self.engine) as session:
            job = session.scalars(select(FineTuningJob).where(FineTuningJob.fine_tuned_model == name)).first()
            if job is not None and job.registry_ref:
                return job.registry_ref
            checkpoint = session.scalars(select(JobCheckpoint).where(JobCheckpoint.fine_tuned_model_checkpoint == name)).first()
            return Path(checkpoint.path) if checkpoint else None

    # --- events and checkpoints -------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, level: str = "info", data: dict | None = None) -> None:
        with Session(self.engine) as session:
            session.add(JobEvent(job_id=job_id, created_at=utcnow(), level=level, message=message,
                                 type="metrics" if data else "message", data=data))
            session.commit()

    def last_reported_step(self, job_id: str) -> int:
        """The highest training step a metrics event of the job names (0 before the first)."""
        with Session(self.engine) as session:
            data = session.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics"))
            return max((d.get("step", 0) for d in data if isinstance(d, dict)), default=0)

    def events(self, job_id: str, after: str | None = None, limit: int = 20) -> tuple[list[dict], bool]:
        """Newest first, like OpenAI's; `after` is an event id from the previous page."""
        self.job(job_id)
        query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id.desc())
        if after:
            query = query.where(JobEvent.id < int(after.removeprefix("ftevent-")))
        with Session(self.engine) as session:
            rows = list(session.scalars(query.limit(limit + 1)))
        return [event_object(row) for row in rows[:limit]], len(rows) > limit

    def add_checkpoint(self, job_id: str, step: int, metrics: dict, path: Path, name: str) -> None:
        with Session(self.engine) as session:
            session.add(JobCheckpoint(id=new_id("ftckpt"), job_id=job_id, created_at=utcnow(), step=step, metrics=metrics,
                                      path=str(path), fine_tuned_model_checkpoint=name))
            session.commit()

    def checkpoints(self, job_id: str) -> list[dict]:
        self.job(job_id)
        query = select(JobCheckpoint).where(JobCheckpoint.job_id == job_id).order_by(JobCheckpoint.step.desc())
        with Session(self.engine) as session:
            return [checkpoint_object(row) for row in session.scalars(query)]


def file_object(row: StoredFile) -> dict:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": _ts(row.created_at), "filename": row.filename,
            "purpose": row.purpose, "status": row.status, "status_details": row.status_details}


def job_object(row: FineTuningJob) -> dict:
    return {
        "id": row.id, "object": "fine_tuning.job", "created_at": _ts(row.created_at), "finished_at": _ts(row.finished_at),
        "model": row.model, "fine_tuned_model": row.fine_tuned_model, "organization_id": "tuneloop",
        "status": row.status, "training_file": row.training_file, "validation_file": row.validation_file,
        "hyperparameters": row.hyperparameters, "method": row.method, "suffix": row.suffix, "seed": row.seed,
        "trained_tokens": row.trained_tokens, "estimated_finish": row.estimated_finish, "error": row.error,
        "integrations": row.integrations or [], "user_provided_suffix": row.suffix, "metadata": row.meta,
        "result_files": row.result_files or [],
    }


def event_object(row: JobEvent) -> dict:
    return {"id": f"ftevent-{row.id}", "object": "fine_tuning.job.event", "created_at": _ts(row.created_at),
            "level": row.level, "message": row.message, "type": row.type, "data": row.data}


def checkpoint_object(row: JobCheckpoint) -> dict:
    return {"id": row.id, "object": "fine_tuning.job.checkpoint", "created_at": _ts(row.created_at),
            "fine_tuning_job_id": row.job_id, "step_number": row.step, "metrics": {"step": row.step, **row.metrics},
            "fine_tuned_model_checkpoint": row.fine_tuned_model_checkpoint}
