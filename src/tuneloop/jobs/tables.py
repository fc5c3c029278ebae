"""The jobs API's tables: uploaded files, fine-tuning jobs, their events and checkpoints (on the shared
database base; the alembic migrations in `tuneloop/db/migrations/` create them)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tuneloop.db.base import Base, utcnow


class StoredFile(Base):
    """An uploaded file (POST /v1/files); its bytes live on disk at `path`."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    filename: Mapped[str] = mapped_column(String(500))
    purpose: Mapped[str] = mapped_column(String(50))
    bytes: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))  # processed | error
    status_details: Mapped[str | None] = mapped_column(Text)  # the validation report when it failed


class FineTuningJob(Base):
    __tablename__ = "fine_tuning_jobs"
    __table_args__ = (Index("ix_fine_tuning_jobs_status", "status"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String(500))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    method: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    # validating_files | queued | running | pausing | paused | succeeded | failed | cancelled
    status: Mapped[str] = mapped_column(String(20))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(500))
    registry_ref: Mapped[str | None] = mapped_column(String(300))
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    estimated_finish: Mapped[int | None] = mapped_column(Integer)  # unix seconds
    run_dir: Mapped[str] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))  # who runs it: host:pid:thread
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))  # renewed while the worker runs it
    trainer_pid: Mapped[int | None] = mapped_column(Integer)  # the training process (its process group) on the worker's host
    meta: Mapped[dict[str, str] | None] = mapped_column("metadata", JSON)  # the user's key/value pairs (`metadata` is taken)
    integrations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)  # [{"type": "wandb", "wandb": {...}}]
    result_files: Mapped[list[str] | None] = mapped_column(JSON)  # file ids: the per-step metrics CSV


class JobEvent(Base):
    __tablename__ = "fine_tuning_job_events"
    __table_args__ = (Index("ix_fine_tuning_job_events_job", "job_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(10))  # info | warn | error
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(10))  # message | metrics
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobCheckpoint(Base):
    __tablename__ = "fine_tuning_job_checkpoints"
    __table_args__ = (Index("ix_fine_tuning_job_checkpoints_job", "job_id"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    step: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    path: Mapped[str] = mapped_column(Text)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(500))
