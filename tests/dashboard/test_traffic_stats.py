"""The traffic page's numbers against the monitor stage's own, on a real SQLite request log."""

from __future__ import annotations

import datetime as dt

from tuneloop.dashboard.traffic_stats import window_summary
from tuneloop.db.requestlog import RequestStore
from tuneloop.monitor import logstats

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def log(store: RequestStore, n: int) -> None:
    store.log_requests([{"id": f"r{i}", "created_at": NOW - dt.timedelta(minutes=n - i), "model": "m@production",
                         "variant": f"m:{1 + i % 2}", "status": 500 if i % 7 == 0 else 200, "latency_ms": float(10 + i),
                         "prompt_tokens": 3, "completion_tokens": 4, "request": {"messages": []},
                         "response": '{"a": 1}' if i % 3 else "no json", "error": "boom" if i == 5 else None} for i in range(n)])


def test_statistics_rows_are_the_logged_requests_without_their_bodies(tmp_path):
    store = RequestStore(f"sqlite:///{tmp_path / 'r.db'}")
    log(store, 30)
    full, lean = store.requests(), store.request_stats()
    assert [r["id"] for r in lean] == [r["id"] for r in full]
    assert all({k: v for k, v in f.items() if k not in ("request", "created_at")} == {k: v for k, v in s.items() if k != "created_at"}
               and logstats.created_at(f) == s["created_at"] for f, s in zip(full, lean))
    assert [r["id"] for r in store.request_stats(limit=5)] == [f"r{i}" for i in range(25, 30)]


def test_a_busy_window_counts_every_request_and_details_the_latest(tmp_path):
    store = RequestStore(f"sqlite:///{tmp_path / 'r.db'}")
    log(store, 70)
    task = {"output_schema": {"type": "object"}}
    everything = logstats.summarise(store.requests(), lambda model: task)
    whole = window_summary(store, None, lambda model: task, now=NOW)
    assert whole["summary"]["overall"] == everything["overall"] and whole["n"] == whole["n_detail"] == 70

    busy = window_summary(store, None, lambda model: task, now=NOW, detail=20)
    overall = busy["summary"]["overall"]
    assert (busy["n"], busy["n_detail"]) == (70, 20)
    assert (overall["requests"], overall["errors"]) == (70, everything["overall"]["errors"]) == (70, 11)
    assert overall["error_rate"] == everything["overall"]["error_rate"]
    latest = logstats.summarise(store.requests()[-20:], lambda model: task)["overall"]
    assert overall["p50_latency_ms"] == latest["p50_latency_ms"] and overall["json_valid"] == latest["json_valid"]
    by_variant = {g["variant"]: g["requests"] for g in busy["summary"]["groups"]}
    assert by_variant == {"m:1": 35, "m:2": 35}
