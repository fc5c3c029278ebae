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
DETAIL = 10_000  # the latest requests of a window that percentiles, quality and the time series come from


def window_summary(requests: RequestStore, window: dt.timedelta | None, task_for: TaskFor = no_task,
                   rules: list[str] = (), now: dt.datetime | None = None, detail: int = DETAIL) -> dict[str, Any]:
    """The monitor's summary of the window. Requests, errors and error rates count every request of the
    window (in the database); latency percentiles, throughput, quality, the time series and the alert rules
    come from its latest `detail` requests, so a page stays fast however busy the server is (`n_detail`
    says how many; `tuneloop monitor report` reads everything)."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - window if window else None
    records = requests.request_stats(since=since, limit=detail)
    summary = logstats.summarise(records, task_for)
    total = len(records)
    if len(records) == detail:  # there may be more: take the exact counts from the database
        counts = requests.counts(since)
        total = sum(c["requests"] for c in counts)
        exact = {(c["model"], c["variant"]): c for c in counts}
        for group in summary["groups"]:
            _exact(group, exact.get((group["model"], group["variant"])))
        _exact(summary["overall"], {"requests": total, "errors": sum(c["errors"] for c in counts)})
    series = logstats.timeseries(records, _bucket(records, window)) if records else []
    fired = alerts.evaluate([r for r in rules if not r.strip().startswith("drift")], records, now, task_for=task_for) if rules else []
    return {"summary": summary, "series": series, "alerts": fired, "n": total, "n_detail": len(records)}


def _exact(metrics: dict[str, Any], counted: dict[str, Any] | None) -> None:
    if counted:
        metrics.update(requests=counted["requests"], errors=counted["errors"],
                       error_rate=counted["errors"] / counted["requests"] if counted["requests"] else None)


def _bucket(records: list[dict], window: dt.timedelta | None) -> dt.timedelta:
    """About BUCKETS buckets over the time the records span (within the window), at least a second each."""
    span = logstats.created_at(records[-1]) - logstats.created_at(records[0])
    return max(min(span, window) / BUCKETS if window else span / BUCKETS, dt.timedelta(seconds=1))
