"""Statistics of the request log: volume, errors, latency, throughput and reference-free quality.

A request record is the dict the server logs per request (`Registry.requests()`, or one JSON line of
an exported log): id, created_at, model, variant, status, latency_ms, ttft_ms, prompt_tokens,
completion_tokens, request, response, error. A request *failed* when its status is 400 or above or
it carries an error; latency percentiles count every request (a timeout is latency the user saw),
throughput and quality count the successful ones. Every number is JSON-safe: None where undefined.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable

import jsonschema
import numpy as np

from tuneloop.artifacts import jsonl_objects
from tuneloop.db.base import to_utc
from tuneloop.errors import TuneloopError
# Shared with the evaluation stage, so that online scores mean exactly what offline scores mean.
from tuneloop.metrics.behaviour import REFUSAL
from tuneloop.metrics.structure import parse_object
from tuneloop.safety import default_screen

TaskFor = Callable[[str], dict | None]
QUALITY = ("json_valid", "schema_valid", "empty", "refusal", "length_chars", "harmful_rate")
WINDOW_METRICS = ("requests", "error_rate", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms", "ttft_p50_ms",
                  "tokens_per_s", *QUALITY)
REQUIRED = ("id", "created_at", "model", "status", "latency_ms")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*")
_MAX_BUCKETS = 100_000


def no_task(model: str) -> dict | None:
    """The default `task_for`: no model has a task, so json_valid and schema_valid stay undefined."""
    return None


# --- reading and time ---------------------------------------------------------------------------

def read_log(path: Path) -> list[dict[str, Any]]:
    """Request records from a JSONL file (one record per line; blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise TuneloopError(f"{path}: request log not found; export one or read the registry instead")
    records = []
    for number, record in jsonl_objects(path, "one request record"):
        missing = [key for key in REQUIRED if record.get(key) is None]
        if missing:
            raise TuneloopError(f"{path}:{number}: request record is missing {missing}")
        created_at(record, where=f"{path}:{number}")  # a bad time is reported here, with its line
        records.append(record)
    return records


def created_at(record: dict[str, Any], where: str = "request record") -> dt.datetime:
    if record.get("created_at") is None:
        raise TuneloopError(f"{where} (id {record.get('id')!r}): no created_at")
    return to_utc(record["created_at"], f"{where} (id {record.get('id')!r}): created_at")


def records_since(records: Iterable[dict[str, Any]], since: dt.datetime | None) -> list[dict[str, Any]]:
    """The records created at or after `since` (inclusive, like `Registry.requests(since=...)`)."""
    if since is None:
        return list(records)
    since = to_utc(since, "since")
    return [record for record in records if created_at(record) >= since]


def parse_duration(text: str) -> dt.timedelta:
    """'30s', '5m', '2h', '1d' (a positive number and one unit) as a timedelta."""
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None or float(match[1]) <= 0:
        raise TuneloopError(f"'{text}' is not a duration; write a positive number and a unit (s, m, h or d), "
                            f"like 30s, 5m, 2h, 1d")
    return dt.timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """An ISO-8601 time, or a duration meaning that long before `now` ('2h' = two hours ago)."""
    if isinstance(text, str) and _DURATION.fullmatch(text):
        return to_utc(now or dt.datetime.now(dt.UTC), "now") - parse_duration(text)
    try:
        return to_utc(text, "since")
    except TuneloopError:
        raise TuneloopError(f"since: '{text}' is neither an ISO-8601 time (2025-01-31T12:00:00Z) nor a duration "
                            f"ago (30s, 5m, 2h, 1d)") from None


# --- one record ---------------------------------------------------------------------------------

def succeeded(record: dict[str, Any]) -> bool:
    return record["status"] < 400 and not record.get("error")


def quality(record: dict[str, Any], task: dict | None, harmful: bool | None = None) -> dict[str, float]:
    """Reference-free scores of one successful response ({} for a failed request).

    json_valid and schema_valid only when the task declares an `output_schema`. harmful_rate: the response
    is flagged by the harmful-content screen (as in evaluation); `harmful`, when already screened.
    """
    if not succeeded(record):
        return {}
    text = record.get("response") or ""
    if harmful is None:
        harmful = default_screen()([text])[0] is not None
    scores = {"empty": float(not text.strip()), "refusal": float(bool(REFUSAL.match(text))),
              "length_chars": float(len(text)), "harmful_rate": float(harmful)}
    schema = (task or {}).get("output_schema")
    if schema is not None:
        parsed = parse_object(text)
        scores["json_valid"] = float(parsed is not None)
        scores["schema_valid"] = float(parsed is not None and _validator(json.dumps(schema, sort_keys=True))
                                       .is_valid(parsed))
    return scores


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    schema = json.loads(schema_json)
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as err:
        raise TuneloopError(f"task output_schema is not a valid JSON schema ({err.message}); fix task.output_schema "
                            f"in the config the model was trained with") from None
    return cls(schema)


# --- many records -------------------------------------------------------------------------------

def summarise(records: list[dict[str, Any]], task_for: TaskFor = no_task) -> dict[str, Any]:
    """Overall metrics and the same metrics per (model, variant) group; JSON-serialisable."""
    groups: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for record in records:
        groups[(record["model"], record.get("variant"))].append(record)
    times = [created_at(record) for record in records]
    scored = quality_all(records, task_for)  # once, for both tables
    return {
        "first": min(times).isoformat() if times else None,
        "last": max(times).isoformat() if times else None,
        "overall": _metrics(records, task_for, scored),
        "groups": [{"model": model, "variant": variant, **_metrics(rows, task_for, scored)}
                   for (model, variant), rows in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))],
    }


def window_metrics(records: list[dict[str, Any]], now: dt.datetime, window: dt.timedelta | None,
                   task_for: TaskFor = no_task) -> dict[str, float | None]:
    """The flat overall metrics (WINDOW_METRICS) of the records in (now - window, now]; all records if no window."""
    if window is not None:
        now = to_utc(now, "now")
        start = now - window
        records = [record for record in records if start < created_at(record) <= now]
    metrics = _metrics(records, task_for)
    return {key: metrics[key] for key in WINDOW_METRICS}


def timeseries(records: list[dict[str, Any]], bucket: dt.timedelta) -> list[dict[str, Any]]:
    """Per time bucket (aligned to the epoch, empty ones included): start, requests, error_rate, p50/p95 latency."""
    step = bucket.total_seconds()
    if step <= 0:
        raise TuneloopError(f"timeseries bucket must be positive, got {bucket}")
    if not records:
        return []
    slots: dict[int, list[dict]] = defaultdict(list)
    for record in records:
        slots[math.floor(created_at(record).timestamp() / step)].append(record)
    first, last = min(slots), max(slots)
    if last - first + 1 > _MAX_BUCKETS:
        raise TuneloopError(f"timeseries: {last - first + 1} buckets of {bucket} span the log; choose a larger bucket")
    epoch = dt.datetime.fromtimestamp(0, dt.UTC)
    series = []
    for slot in range(first, last + 1):
        rows = slots.get(slot, [])
        latencies = [float(record["latency_ms"]) for record in rows]
        series.append({"start": (epoch + dt.timedelta(seconds=slot * step)).isoformat(), "requests": len(rows),
                       "error_rate": _ratio(sum(not succeeded(r) for r in rows), len(rows)),
                       "p50_latency_ms": _percentile(latencies, 50), "p95_latency_ms": _percentile(latencies, 95)})
    return series


def quality_all(records: list[dict[str, Any]], task_for: TaskFor) -> dict[int, dict[str, float]]:
    """quality() of every record, by id(record); the harmful-content screen runs once over all responses."""
    ok = [record for record in records if succeeded(record)]
    flags = default_screen()([record.get("response") or "" for record in ok])
    harmful = {id(record): flag is not None for record, flag in zip(ok, flags)}
    return {id(record): quality(record, task_for(record["model"]), harmful.get(id(record))) for record in records}


def _metrics(records: list[dict[str, Any]], task_for: TaskFor, scored: dict[int, dict[str, float]] | None = None) -> dict[str, Any]:
    """`scored`: each record's quality() by id(record), when already computed."""
    scored = quality_all(records, task_for) if scored is None else scored
    ok = [record for record in records if succeeded(record)]
    latencies = [float(record["latency_ms"]) for record in records]
    ttfts = [float(record["ttft_ms"]) for record in records if record.get("ttft_ms") is not None]
    ok_seconds = sum(float(record["latency_ms"]) for record in ok) / 1000
    ok_tokens = sum(int(record.get("completion_tokens") or 0) for record in ok)
    scores: dict[str, list[float]] = defaultdict(list)
    for record in ok:
        for name, value in scored[id(record)].items():
            scores[name].append(value)
    return {
        "requests": len(records),
        "errors": len(records) - len(ok),
        "error_rate": _ratio(len(records) - len(ok), len(records)),
        "p50_latency_ms": _percentile(latencies, 50),
        "p95_latency_ms": _percentile(latencies, 95),
        "p99_latency_ms": _percentile(latencies, 99),
        "ttft_p50_ms": _percentile(ttfts, 50),
        "tokens_per_s": ok_tokens / ok_seconds if ok_seconds > 0 else None,
        "prompt_tokens": sum(int(record.get("prompt_tokens") or 0) for record in records),
        "completion_tokens": sum(int(record.get("completion_tokens") or 0) for record in records),
        **{name: (sum(scores[name]) / len(scores[name]) if scores[name] else None) for name in QUALITY},
    }


def _percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default); None for no values."""
    return float(np.percentile(values, q)) if values else None


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None
