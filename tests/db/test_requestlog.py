"""The request log: records round-trip with their columns, times in UTC, filters, and clear errors."""

import datetime as dt

import pytest

from tuneloop.db.requestlog import RequestStore
from tuneloop.errors import TuneloopError


def test_request_log_round_trip(tmp_path):
    store = RequestStore(f"sqlite:///{tmp_path / 'r.db'}")
    t0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
    store.log_requests([
        {"id": "r1", "created_at": t0.isoformat(), "model": "support", "status": 200, "latency_ms": 120.5, "ttft_ms": 30.0,
         "prompt_tokens": 12, "completion_tokens": 7, "request": {"messages": [{"role": "user", "content": "hi"}]},
         "response": "hello", "variant": "support:2", "route": "ab", "user": "u1"},
        {"id": "r2", "created_at": t0 + dt.timedelta(minutes=5), "model": "support", "status": 500, "latency_ms": 3.0,
         "error": "boom"},
        # Another zone: stored as the same instant in UTC.
        {"id": "r3", "created_at": "2025-03-01T14:02:00+02:00", "model": "other", "status": 200, "latency_ms": 1.0},
    ])
    everything = store.requests()
    assert [r["id"] for r in everything] == ["r1", "r3", "r2"]
    first = everything[0]
    assert first["request"] == {"messages": [{"role": "user", "content": "hi"}]} and first["ttft_ms"] == 30.0
    assert (first["variant"], first["route"], first["user"], first["response"]) == ("support:2", "ab", "u1", "hello")
    assert dt.datetime.fromisoformat(first["created_at"]) == t0
    assert everything[2]["ttft_ms"] is None and everything[2]["error"] == "boom" and everything[2]["prompt_tokens"] == 0
    assert [r["id"] for r in store.requests(since=t0 + dt.timedelta(minutes=1))] == ["r3", "r2"]
    assert [r["id"] for r in store.requests(since=t0, model="support")] == ["r1", "r2"]
    assert [r["id"] for r in store.requests(limit=1)] == ["r2"]
    with pytest.raises(TuneloopError, match="already logged"):
        store.log_requests([{"id": "r1", "model": "support", "status": 200, "latency_ms": 1.0}])
    with pytest.raises(TuneloopError, match=r"unknown keys \['latency'\]"):
        store.log_requests([{"id": "r9", "model": "support", "status": 200, "latency": 1.0}])
    assert len(store.requests()) == 3
