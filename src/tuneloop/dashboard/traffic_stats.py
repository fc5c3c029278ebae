"""The traffic page's numbers: the monitor stage's summary, time series and alert rules over one window of
the request log."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tuneloop.db.requestlog import RequestStore
from tuneloop.monitor import alerts, logstats
from tuneloop.monitor.logstats import TaskFor, no_task

WINDOWS = {"1h": dt.timedelta(hours=1), "24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7),
           "30d": dt.timedelta(days=30), "all": None}
BUCKETS = 40


def window_summary(requests: RequestStore, window: dt.timedelta | None, task_for: TaskFor = no_task,
                   rules: list[str] = (), now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or dt.datetime.now(dt.UTC)
    records = requests.requests(since=now - window if window else None)
    summary = logstats.summarise(records, task_for)
    series = logstats.timeseries(records, _bucket(records, window)) if records else []
    fired = alerts.evaluate([r for r in rules if not r.strip().startswith("drift")], records, now, task_for=task_for) if rules else []
    return {"summary": summary, "series": series, "alerts": fired, "n": len(records)}


def _bucket(records: list[dict], window: dt.timedelta | None) -> dt.timedelta:
    """About BUCKETS buckets over the window (or the log's span), at least a second each."""
    if window is None:
        first, last = logstats.created_at(records[0]), logstats.created_at(records[-1])
        window = last - first
    return max(window / BUCKETS, dt.timedelta(seconds=1))
