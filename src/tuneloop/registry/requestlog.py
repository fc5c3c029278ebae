"""The request log the serving stage writes (one row per served request) and the monitor reads.

Records are plain dicts keyed by the `request_log` column names (tables.RequestRecord). Checked here
rather than by the database, so that a typo in a key is an error that names it, not a lost column.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tuneloop.errors import TuneloopError
from tuneloop.registry.tables import RequestRecord, as_utc, utcnow

COLUMNS = [column.name for column in RequestRecord.__table__.columns]
REQUIRED = ("id", "model", "status", "latency_ms")


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
