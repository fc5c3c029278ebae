"""The monitor's three checks over the request log, as the CLI runs them: report, drift, alerts.

Each reads the request log (`traffic`: tuneloop.db.requestlog.RequestStore, or a JSONL export given as
`log`) and looks served versions up in the registry (`versions`), both handed in by the caller.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tuneloop.config import DriftConfig, MonitorConfig
from tuneloop.errors import TuneloopError
from tuneloop.monitor import alerts as alert_rules
from tuneloop.monitor.drift import detect_drift
from tuneloop.monitor.logstats import parse_duration, summarise, timeseries
from tuneloop.monitor.report import write_report
from tuneloop.monitor.sources import Traffic, Versions, load_records, task_lookup, traffic_sample, training_sample


def report(traffic: Traffic, versions: Versions, out: Path, *, since: dt.datetime | None = None, log: Path | None = None,
           bucket: str | None = None, drift: dict | None = None) -> dict:
    """Summarise the request log (overall and per model/variant) and write the HTML report into `out`."""
    records = load_records(traffic, log, since)
    summary = summarise(records, task_lookup(versions))
    series = timeseries(records, parse_duration(bucket) if bucket else _bucket_for(records, summary)) if records else []
    files = write_report(summary, series, out, drift)
    return {"summary": summary, "files": [str(f) for f in files]}


def drift(traffic: Traffic, versions: Versions, model: str, cfg: DriftConfig, *, since: dt.datetime | None = None,
          log: Path | None = None) -> dict:
    """Traffic a registered version served, against the data it was trained on."""
    version = versions.resolve(model)
    reference, reference_labels, task = training_sample(version)
    current, current_labels = traffic_sample(load_records(traffic, log, since), version["ref"], task)
    result = detect_drift(reference, current, cfg, reference_labels=reference_labels, current_labels=current_labels)
    return {"model": version["ref"], **result}


def check_alerts(traffic: Traffic, versions: Versions, cfg: MonitorConfig, alert_log: Path, *, log: Path | None = None,
                 drift_result: dict | None = None, now: dt.datetime | None = None) -> dict:
    """Evaluate the configured rules on the log; fired alerts go to `alert_log` and the webhook."""
    if not cfg.alerts:
        raise TuneloopError("no alert rules: add monitor.alerts to the config, e.g. ['error_rate > 0.02 over 5m']")
    rules = alert_rules.parse_rules(cfg.alerts)
    if any(rule.metric == "drift" for rule in rules) and drift_result is None:
        raise TuneloopError("a 'drift' alert rule needs --drift MODEL to say which served version to check")
    now = now or dt.datetime.now(dt.UTC)
    longest = max((rule.window for rule in rules if rule.window), default=None)
    records = load_records(traffic, log, now - longest if longest and all(rule.window for rule in rules if rule.metric != "drift") else None)
    results = alert_rules.evaluate(rules, records, now, drift=drift_result, task_for=task_lookup(versions))
    fired = [r for r in results if r["fired"]]
    delivery = alert_rules.deliver(fired, alert_log, cfg.webhook)
    return {"results": results, "fired": len(fired), "delivery": delivery}


def _bucket_for(records: list[dict], summary: dict) -> dt.timedelta:
    """About 30 buckets over the span of the log, at least a second each."""
    span = dt.datetime.fromisoformat(summary["last"]) - dt.datetime.fromisoformat(summary["first"])
    return max(span / 30, dt.timedelta(seconds=1))
