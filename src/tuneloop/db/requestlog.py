"""The request log and feedback: one row per served request (written by the serving stage) and the users'
judgements of them (POST /v1/feedback); the monitor reads both.

Records are plain dicts keyed by the `request_log` column names. They are checked here rather than by
the database, so that a typo in a key is an error that names it, not a lost column.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, DateTime, Float, Index, Integer, String, Text, and_, case, func, insert, or_, select, type_coerce
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Mapped, Session, mapped_column

from tuneloop.db import Database
from tuneloop.db.base import Base, as_utc, to_utc, utcnow
from tuneloop.errors import TuneloopError


class RequestRecord(Base):
    """One served request, written in batches by the serving stage (RequestStore.log_requests)."""

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


COLUMNS = [column.name for column in RequestRecord.__table__.columns]
REQUIRED = ("id", "model", "status", "latency_ms")


class RequestStore:
    """Read and write the request log and feedback of one database."""

    def __init__(self, database: Database | str | None = None):
        self.database = Database.of(database)
        self.url, self.engine = self.database.url, self.database.engine

    def log_requests(self, records: list[dict[str, Any]]) -> None:
        """Insert served-request records (keys: the request_log columns) in one transaction."""
        complete = rows(records)
        if not complete:
            return
        try:
            self.database.write("log requests", lambda s: s.execute(insert(RequestRecord), complete), retry_on=(OperationalError,))
        except IntegrityError:
            ids = [row["id"] for row in complete]
            raise TuneloopError(f"request log: a request id in this batch is already logged (ids: {ids[:5]}"
                                f"{'...' if len(ids) > 5 else ''}); request ids must be unique") from None

    def requests(self, since: dt.datetime | None = None, model: str | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
        """Logged requests, oldest first; `since` is inclusive; `limit` keeps the most recent ones."""
        query = select(RequestRecord)
        if since is not None:
            query = query.where(RequestRecord.created_at >= to_utc(since, "since"))
        if model is not None:
            query = query.where(RequestRecord.model == model)
        query = query.order_by(RequestRecord.created_at.desc(), RequestRecord.id.desc())  # newest first ...
        if limit is not None:
            query = query.limit(limit)
        with Session(self.engine) as session:
            return [row.to_dict() for row in reversed(session.scalars(query).all())]  # ... returned oldest first

    def request_stats(self, since: dt.datetime | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """The logged requests as `requests()` returns them (oldest first; `limit` keeps the most recent), without
        the request bodies and with created_at as an aware datetime: what statistics need, read without ORM
        objects (several times faster)."""
        columns = [c for c in RequestRecord.__table__.columns if c.name != "request"]
        names = [c.name for c in columns]
        # created_at as the driver gives it (SQLite: text, parsed below in one pass; PostgreSQL: a datetime).
        shown = [type_coerce(c, String).label(c.name) if c.name == "created_at" else c for c in columns]
        query = select(*shown).order_by(RequestRecord.created_at.desc(), RequestRecord.id.desc())
        if since is not None:
            query = query.where(RequestRecord.created_at >= to_utc(since, "since"))
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).all()
        records = [dict(zip(names, row)) for row in reversed(rows)]
        for record in records:
            record["created_at"] = to_utc(record["created_at"], "created_at")
        return records

    def counts(self, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Requests and failed requests (status >= 400 or an error) per (model, variant), counted in the database."""
        failed = case((or_(RequestRecord.status >= 400, and_(RequestRecord.error.is_not(None), RequestRecord.error != "")), 1), else_=0)
        query = (select(RequestRecord.model, RequestRecord.variant, func.count(), func.sum(failed))
                 .group_by(RequestRecord.model, RequestRecord.variant))
        if since is not None:
            query = query.where(RequestRecord.created_at >= to_utc(since, "since"))
        with self.engine.connect() as connection:
            return [{"model": m, "variant": v, "requests": n, "errors": int(e or 0)} for m, v, n, e in connection.execute(query)]

    def request(self, request_id: str) -> dict[str, Any] | None:
        with Session(self.engine) as session:
            row = session.get(RequestRecord, request_id)
            return row.to_dict() if row else None

    def add_feedback(self, request_id: str, *, rating: str | None = None, score: float | None = None,
                     corrected: str | None = None, comment: str | None = None) -> dict[str, Any]:
        def add(session: Session) -> dict[str, Any]:
            row = Feedback(request_id=request_id, rating=rating, score=score, corrected=corrected, comment=comment,
                           created_at=utcnow())
            session.add(row)
            session.flush()
            return row.to_dict()

        return self.database.write("add feedback", add)

    def feedback(self, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Feedback oldest first, each with the logged `request` it judges (None if that was never logged)."""
        query = select(Feedback, RequestRecord).outerjoin(RequestRecord, RequestRecord.id == Feedback.request_id)
        if since is not None:
            query = query.where(Feedback.created_at >= to_utc(since, "since"))
        with Session(self.engine) as session:
            return [fb.to_dict() | {"request": req.to_dict() if req else None}
                    for fb, req in session.execute(query.order_by(Feedback.id))]


def rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records as complete rows (every column present, as a bulk insert needs), or a clear error."""
    out = []
    for i, record in enumerate(records):
        unknown = sorted(set(record) - set(COLUMNS))
        if unknown:
            raise TuneloopError(f"request record {i}: unknown keys {unknown}; the columns are {COLUMNS}")
        missing = [key for key in REQUIRED if record.get(key) is None]
        if missing:
            raise TuneloopError(f"request record {i} (id {record.get('id')!r}): missing {missing}")
        row = dict.fromkeys(COLUMNS) | {"prompt_tokens": 0, "completion_tokens": 0, "request": {}} | {k: v for k, v in record.items() if v is not None}
        row["created_at"] = to_utc(record["created_at"], f"request {record['id']}: created_at") \
            if record.get("created_at") is not None else utcnow()
        out.append(row)
    return out
