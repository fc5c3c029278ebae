"""The registry's tables as SQLAlchemy ORM classes; the alembic migrations in `migrations/` create them.

A change here needs a new migration (tests/registry/test_migrations.py checks that the two agree).

Deleted versions are kept as tombstones (`deleted_at` set) rather than removed: every query hides
them, but they keep their number, so `max(version) + 1` never hands a deleted number out again and
the lineage of anything derived from them stays readable.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back without a zone; they were stored as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    artifact_path: Mapped[str] = mapped_column(Text)
    base_model: Mapped[str] = mapped_column(String(500))
    method: Mapped[str] = mapped_column(String(50))
    data_hash: Mapped[str | None] = mapped_column(String(64))
    train_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    eval_results: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    task: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))

    def to_dict(self, aliases: list[str] | None = None) -> dict[str, Any]:
        return {
            "name": self.name, "version": self.version, "ref": f"{self.name}:{self.version}",
            "aliases": sorted(aliases or []),
            "artifact_path": self.artifact_path, "base_model": self.base_model, "method": self.method,
            "data_hash": self.data_hash, "train_config": self.train_config, "eval_results": self.eval_results,
            "task": self.task, "note": self.note, "created_at": as_utc(self.created_at).isoformat(),
        }


class Alias(Base):
    """A movable name for one version (`support@production`). `event_id` is the last event that moved
    it: writers update the row only if it is unchanged since they read it (optimistic locking)."""

    __tablename__ = "aliases"
    __table_args__ = (UniqueConstraint("name", "alias", name="uq_aliases_name_alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    event_id: Mapped[int] = mapped_column(Integer)


class AliasEvent(Base):
    """The audit log of alias moves; rollback replays it (see aliases.version_stack)."""

    __tablename__ = "alias_events"
    __table_args__ = (Index("ix_alias_events_name_alias", "name", "alias"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    alias: Mapped[str] = mapped_column(String(100))
    from_version: Mapped[int | None] = mapped_column(Integer)
    to_version: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(20))  # set | rollback | delete
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "alias": self.alias, "action": self.action, "from_version": self.from_version,
            "to_version": self.to_version, "actor": self.actor, "reason": self.reason, "at": as_utc(self.at).isoformat(),
        }


class RequestRecord(Base):
    """One served request, written in batches by the serving stage (Registry.log_requests)."""

    __tablename__ = "request_log"
    __table_args__ = (Index("ix_request_log_created_at", "created_at"), Index("ix_request_log_model", "model"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the request id
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    model: Mapped[str] = mapped_column(String)
    variant: Mapped[str | None] = mapped_column(String)
    route: Mapped[str | None] = mapped_column(String)
    user: Mapped[str | None] = mapped_column(String)
    status: Mapped[int] = mapped_column(Integer)  # HTTP status
    latency_ms: Mapped[float] = mapped_column(Float)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    request: Mapped[Any] = mapped_column(JSON)
    response: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        row = {column.name: getattr(self, column.name) for column in self.__table__.columns}
        row["created_at"] = as_utc(self.created_at).isoformat()
        return row


class Feedback(Base):
    """A user's judgement of one served response (POST /v1/feedback): a rating, a score, a correction."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_request_id", "request_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    rating: Mapped[str | None] = mapped_column(String(10))  # "up" | "down"
    score: Mapped[float | None] = mapped_column(Float)  # 0..1
    corrected: Mapped[str | None] = mapped_column(Text)  # the output the model should have given
    comment: Mapped[str | None] = mapped_column(Text)

    def to_dict(self) -> dict[str, Any]:
        row = {column.name: getattr(self, column.name) for column in self.__table__.columns}
        row["created_at"] = as_utc(self.created_at).isoformat()
        return row


# --- the fine-tuning jobs API (tuneloop.jobs) ---------------------------------------------------
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
    status: Mapped[str] = mapped_column(String(20))  # validating_files | queued | running | succeeded | failed | cancelled
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(500))
    registry_ref: Mapped[str | None] = mapped_column(String(300))
    trained_tokens: Mapped[int | None] = mapped_column(Integer)
    estimated_finish: Mapped[int | None] = mapped_column(Integer)  # unix seconds
    run_dir: Mapped[str] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))  # who runs it: host:pid:thread


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
