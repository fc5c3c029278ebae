"""The declarative base every table of tuneloop's database derives from, and the one way times are stored.

Each owner declares its own tables on this base: the registry its versions and aliases
(`registry/tables.py`), the jobs API its files and jobs (`jobs/tables.py`), and this package the request
log and feedback (`requestlog.py`). One alembic history (`migrations/`) creates them all.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import DeclarativeBase

from tuneloop.errors import TuneloopError


class Base(DeclarativeBase):
    pass


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back without a zone; they were stored as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def to_utc(value: dt.datetime | str, what: str) -> dt.datetime:
    """A datetime or ISO-8601 string as an aware UTC datetime (no zone given means UTC)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise TuneloopError(f"{what}: '{value}' is not an ISO-8601 time (like 2025-01-31T12:00:00+00:00)") from None
    if not isinstance(value, dt.datetime):
        raise TuneloopError(f"{what}: expected a datetime or an ISO-8601 string, got {type(value).__name__}")
    return as_utc(value)
