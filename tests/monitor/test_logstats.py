"""Request-log statistics on constructed logs with fixed times: every expected number is worked out by hand."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.monitor.logstats import (WINDOW_METRICS, parse_duration, parse_since, quality, read_log, records_since,
                                       summarise, timeseries, window_metrics)

NOW = dt.datetime(2025, 1, 31, 12, 0, tzinfo=dt.UTC)
SCHEMA = {"type": "object", "properties": {"category": {"enum": ["billing", "shipping"]}}, "required": ["category"]}
TASK = {"output_schema": SCHEMA}


def record(i: int = 0, *, ago: dt.timedelta = dt.timedelta(seconds=30), model: str = "support:3",
           variant: str | None = None, status: int = 200, latency_ms: float = 100.0, ttft_ms: float | None = 10.0,
           prompt_tokens: int = 5, completion_tokens: int = 10, response: str | None = '{"category": "billing"}',
           error: str | None = None) -> dict:
    return {"id": f"r{i}", "created_at": (NOW - ago).isoformat(), "model": model, "variant": variant,
            "route": None, "user": None, "status": status, "latency_ms": latency_ms, "ttft_ms": ttft_ms,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "request": {"messages": [{"role": "user", "content": "where is my parcel?"}]},
            "response": response, "error": error}


def test_percentiles_interpolate_between_ranks():
    records = [record(i, latency_ms=float(i)) for i in range(1, 101)]  # latencies 1..100 ms
    metrics = window_metrics(records, NOW, None)
    assert metrics["p50_latency_ms"] == pytest.approx(50.5)
    assert metrics["p95_latency_ms"] == pytest.approx(95.05)
    assert metrics["p99_latency_ms"] == pytest.approx(99.01)
    assert set(metrics) == set(WINDOW_METRICS)


def test_error_rate_tokens_per_s_and_totals():
    records = [record(i) for i in range(8)]
    records += [record(8, status=500, error="engine crashed", response=None, latency_ms=5000.0, completion_tokens=0),
                record(9, status=200, error="stream aborted", latency_ms=7000.0, completion_tokens=3)]
    overall = summarise(records)["overall"]
    assert overall["requests"] == 10 and overall["errors"] == 2
    assert overall["error_rate"] == pytest.approx(0.2)
    # Throughput counts successful requests only: 8 x 10 tokens over 8 x 0.1 s.
    assert overall["tokens_per_s"] == pytest.approx(100.0)
    assert overall["prompt_tokens"] == 50 and overall["completion_tokens"] == 83
    assert overall["ttft_p50_ms"] == pytest.approx(10.0)


def test_groups_split_by_model_and_variant():
    records = ([record(i, variant="support@champion", latency_ms=100.0) for i in range(4)]
               + [record(10 + i, variant="support@challenger", latency_ms=300.0, status=500 if i == 0 else 200)
                  for i in range(2)]
               + [record(20, model="base-model", latency_ms=50.0)])
    summary = summarise(records)
    groups = {(g["model"], g["variant"]): g for g in summary["groups"]}
    assert set(groups) == {("support:3", "support@champion"), ("support:3", "support@challenger"), ("base-model", None)}
    assert groups[("support:3", "support@champion")]["requests"] == 4
    assert groups[("support:3", "support@champion")]["error_rate"] == 0
    assert groups[("support:3", "support@challenger")]["error_rate"] == pytest.approx(0.5)
    assert groups[("support:3", "support@challenger")]["p50_latency_ms"] == pytest.approx(300.0)
    assert groups[("base-model", None)]["p50_latency_ms"] == pytest.approx(50.0)
    assert summary["overall"]["requests"] == 7
    assert summary["first"] == summary["last"] == (NOW - dt.timedelta(seconds=30)).isoformat()


def test_summary_is_json_without_nan():
    summary = summarise([record(0, status=500, response=None, error="boom", ttft_ms=None)])
    text = json.dumps(summary, allow_nan=False)  # raises on NaN or infinity
    overall = json.loads(text)["overall"]
    assert overall["error_rate"] == 1.0
    assert overall["tokens_per_s"] is None and overall["empty"] is None and overall["ttft_p50_ms"] is None
    assert summarise([])["overall"]["error_rate"] is None


@pytest.mark.parametrize("response, expected", [
    ('{"category": "billing"}', {"json_valid": 1.0, "schema_valid": 1.0, "empty": 0.0, "refusal": 0.0}),
    ('Sure! {"category": "billing"}', {"json_valid": 0.0, "schema_valid": 0.0, "empty": 0.0, "refusal": 0.0}),
    ('{"category": "weather"}', {"json_valid": 1.0, "schema_valid": 0.0, "empty": 0.0, "refusal": 0.0}),
    ("I'm sorry, I can't help with that.", {"json_valid": 0.0, "schema_valid": 0.0, "empty": 0.0, "refusal": 1.0}),
    ("   ", {"json_valid": 0.0, "schema_valid": 0.0, "empty": 1.0, "refusal": 0.0}),
    (None, {"json_valid": 0.0, "schema_valid": 0.0, "empty": 1.0, "refusal": 0.0}),
])
def test_quality_with_a_schema(response, expected):
    scores = quality(record(response=response), TASK)
    assert {k: scores[k] for k in expected} == expected
    assert scores["length_chars"] == len(response or "")


def test_quality_without_schema_has_no_json_scores_and_failed_requests_none():
    assert set(quality(record(), None)) == {"empty", "refusal", "length_chars", "harmful_rate"}
    assert quality(record(status=503, response=None, error="overloaded"), TASK) == {}


def test_quality_means_use_each_models_task():
    records = [record(0, response='{"category": "billing"}'), record(1, response="not json"),
               record(2, model="base-model", response="not json either")]
    overall = window_metrics(records, NOW, None, task_for=lambda model: TASK if model == "support:3" else None)
    assert overall["json_valid"] == pytest.approx(0.5)  # the base model has no schema: not counted
    assert overall["schema_valid"] == pytest.approx(0.5)
    assert window_metrics(records, NOW, None)["json_valid"] is None


def test_harmful_rate_of_served_responses_overall_per_group_and_for_alerts():
    from tuneloop.monitor.alerts import evaluate

    records = [record(0, response="Your refund is on its way."), record(1, response="Read the manual, you lazy idiot."),
               record(2, variant="b", response="go kill yourself"), record(3, variant="b", response="Done!"),
               record(4, status=500, response=None, error="boom")]  # failed: not scored
    assert [quality(r, None).get("harmful_rate") for r in records] == [0.0, 1.0, 1.0, 0.0, None]
    summary = summarise(records)
    assert summary["overall"]["harmful_rate"] == pytest.approx(0.5)
    assert [g["harmful_rate"] for g in summary["groups"]] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert window_metrics(records[:1], NOW, None)["harmful_rate"] == 0.0
    [fired] = evaluate(["harmful_rate > 0 over 5m"], records, NOW)
    assert fired["fired"] and fired["value"] == pytest.approx(0.5)


def test_invalid_output_schema_is_a_clear_error():
    with pytest.raises(TuneloopError, match="output_schema"):
        quality(record(), {"output_schema": {"type": "no-such-type"}})


def test_window_is_half_open_and_relative_to_now():
    records = [record(0, ago=dt.timedelta(minutes=5)),  # exactly at the window start: excluded
               record(1, ago=dt.timedelta(minutes=4), status=500, error="x"),
               record(2, ago=dt.timedelta(0)),  # exactly now: included
               record(3, ago=dt.timedelta(minutes=-1))]  # in the future: excluded
    metrics = window_metrics(records, NOW, dt.timedelta(minutes=5))
    assert metrics["requests"] == 2 and metrics["error_rate"] == pytest.approx(0.5)
    assert window_metrics(records, NOW, None)["requests"] == 4
    empty = window_metrics(records, NOW - dt.timedelta(hours=1), dt.timedelta(minutes=5))
    assert empty["requests"] == 0 and empty["error_rate"] is None and empty["p95_latency_ms"] is None


def test_records_since_is_inclusive():
    records = [record(i, ago=dt.timedelta(minutes=i)) for i in range(5)]
    kept = records_since(records, NOW - dt.timedelta(minutes=2))
    assert [r["id"] for r in kept] == ["r0", "r1", "r2"]
    assert records_since(records, None) == records


def test_timeseries_buckets_include_empty_ones():
    records = [record(0, ago=dt.timedelta(minutes=10, seconds=-5), latency_ms=100.0),
               record(1, ago=dt.timedelta(minutes=10, seconds=-20), latency_ms=300.0, status=500, error="x"),
               record(2, ago=dt.timedelta(minutes=8, seconds=-1), latency_ms=50.0)]
    series = timeseries(records, dt.timedelta(minutes=1))
    assert [b["start"] for b in series] == [(NOW - dt.timedelta(minutes=m)).isoformat() for m in (10, 9, 8)]
    assert [b["requests"] for b in series] == [2, 0, 1]
    assert series[0]["error_rate"] == pytest.approx(0.5) and series[0]["p50_latency_ms"] == pytest.approx(200.0)
    assert series[1]["error_rate"] is None and series[1]["p95_latency_ms"] is None
    assert series[2]["p95_latency_ms"] == pytest.approx(50.0)
    with pytest.raises(TuneloopError, match="bucket"):
        timeseries(records, dt.timedelta(0))


@pytest.mark.parametrize("text, seconds", [("30s", 30), ("5m", 300), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["5", "5x", "m", "-5m", "0s", "", "5 minutes"])
def test_parse_duration_rejects(text):
    with pytest.raises(TuneloopError, match="duration"):
        parse_duration(text)


def test_parse_since_accepts_iso_or_duration_ago():
    assert parse_since("2h", now=NOW) == NOW - dt.timedelta(hours=2)
    assert parse_since("2025-01-31T10:00:00Z") == dt.datetime(2025, 1, 31, 10, tzinfo=dt.UTC)
    assert parse_since("2025-01-31T10:00:00") == dt.datetime(2025, 1, 31, 10, tzinfo=dt.UTC)  # no zone = UTC
    with pytest.raises(TuneloopError, match=r"since: .yesterday. is neither an ISO-8601 time .* nor a duration ago"):
        parse_since("yesterday")


def test_read_log_round_trip_and_blank_lines(tmp_path):
    records = [record(i) for i in range(3)]
    path = tmp_path / "requests.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + json.dumps(records[2]) + "\n")
    assert read_log(path) == records


@pytest.mark.parametrize("bad, message", [
    ('{"id": "r1", "created_at": ', r"requests\.jsonl:3: not valid JSON"),
    ("[1, 2]", r"requests\.jsonl:3: a list, not a JSON object"),
    ('{"id": "r1"}', r"requests\.jsonl:3: request record is missing \['created_at', 'model', 'status', 'latency_ms'\]"),
    (json.dumps(record(1) | {"created_at": "last tuesday"}), r"requests\.jsonl:3 .*not an ISO-8601 time"),
])
def test_read_log_names_the_bad_line(tmp_path, bad, message):
    path = tmp_path / "requests.jsonl"
    path.write_text(json.dumps(record(0)) + "\n\n" + bad + "\n" + json.dumps(record(2)) + "\n")
    with pytest.raises(TuneloopError, match=message):
        read_log(path)


def test_read_log_missing_file(tmp_path):
    with pytest.raises(TuneloopError, match="request log not found"):
        read_log(tmp_path / "nope.jsonl")
