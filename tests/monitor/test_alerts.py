"""Alert rules on constructed logs, and delivery to a real local webhook (and to a closed port)."""

from __future__ import annotations

import datetime as dt
import json
import socket

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.monitor.alerts import Rule, deliver, evaluate, parse_rule, parse_rules

NOW = dt.datetime(2025, 1, 31, 12, 0, tzinfo=dt.UTC)
TASK = {"output_schema": {"type": "object", "required": ["category"]}}


def record(i: int, ago: dt.timedelta, *, status: int = 200, response: str = '{"category": "billing"}',
           latency_ms: float = 100.0) -> dict:
    return {"id": f"r{i}", "created_at": (NOW - ago).isoformat(), "model": "support:3", "variant": None,
            "status": status, "latency_ms": latency_ms, "ttft_ms": None, "prompt_tokens": 5, "completion_tokens": 10,
            "request": {"prompt": "hi"}, "response": None if status >= 400 else response,
            "error": "engine error" if status >= 400 else None}


def traffic(errors_ago: dt.timedelta) -> list[dict]:
    """100 requests in the last 5 minutes, and 3 failed ones `errors_ago`."""
    ok = [record(i, dt.timedelta(seconds=2 * i + 1)) for i in range(100)]
    return ok + [record(100 + i, errors_ago, status=500) for i in range(3)]


def test_parse_rule():
    assert parse_rule("error_rate > 0.02 over 5m") == Rule(
        text="error_rate > 0.02 over 5m", metric="error_rate", op=">", threshold=0.02,
        window=dt.timedelta(minutes=5), window_text="5m")
    rule = parse_rule("p95_latency_ms>=2000")
    assert (rule.metric, rule.op, rule.threshold, rule.window) == ("p95_latency_ms", ">=", 2000.0, None)
    assert parse_rule(" drift ").metric == "drift"


@pytest.mark.parametrize("text, message", [
    ("errors_rate > 0.02", r"'errors_rate > 0.02': unknown metric 'errors_rate'; the metrics are requests, error_rate"),
    ("error_rate = 0.02", r"cannot parse it; write METRIC OP NUMBER"),
    ("error_rate > lots", r"'lots' is not a number"),
    ("error_rate > nan", r"'nan' is not a number"),
    ("error_rate > 0.02 over 5 minutes", r"cannot parse it"),
    ("error_rate > 0.02 over 5x", r"'5x' is not a duration"),
    ("drift > 0.5", r"unknown metric 'drift'.*bare word 'drift'"),
])
def test_bad_rules_are_named_with_what_to_write(text, message):
    with pytest.raises(TuneloopError, match=message):
        parse_rule(text)


def test_parse_rules_names_the_config_entry():
    with pytest.raises(TuneloopError, match=r"monitor\.alerts\[1\] 'latency > 3'"):
        parse_rules(["error_rate > 0.02", "latency > 3"])


def test_recent_errors_fire_and_old_ones_do_not():
    rule = "error_rate > 0.02 over 5m"
    [recent] = evaluate([rule], traffic(errors_ago=dt.timedelta(minutes=1)), NOW)
    assert recent["fired"] is True
    assert recent["value"] == pytest.approx(3 / 103)
    assert (recent["rule"], recent["metric"], recent["threshold"], recent["window"]) == (rule, "error_rate", 0.02, "5m")
    [old] = evaluate([rule], traffic(errors_ago=dt.timedelta(minutes=10)), NOW)
    assert old["fired"] is False and old["value"] == 0.0
    # Without a window the old errors count again.
    [everything] = evaluate(["error_rate > 0.02"], traffic(errors_ago=dt.timedelta(minutes=10)), NOW)
    assert everything["fired"] is True and everything["window"] is None


def test_threshold_is_compared_with_the_operator():
    records = traffic(errors_ago=dt.timedelta(minutes=1))  # error rate 3/103 ~ 0.0291
    fired = {r["rule"]: r["fired"] for r in evaluate(
        ["error_rate >= 0.03", "error_rate < 0.03", "error_rate <= 0.02", "requests >= 103"], records, NOW)}
    assert fired == {"error_rate >= 0.03": False, "error_rate < 0.03": True, "error_rate <= 0.02": False,
                     "requests >= 103": True}


def test_json_valid_rule():
    good = [record(i, dt.timedelta(seconds=i + 1)) for i in range(96)]
    bad = [record(100 + i, dt.timedelta(seconds=i + 1), response="Sure, it is billing.") for i in range(4)]
    [result] = evaluate(["json_valid < 0.95"], good + bad, NOW, task_for=lambda model: TASK)
    assert result["value"] == pytest.approx(0.96) and result["fired"] is False
    [result] = evaluate(["json_valid < 0.95"], good[:90] + bad, NOW, task_for=lambda model: TASK)
    assert result["value"] == pytest.approx(90 / 94) and result["fired"] is False
    [result] = evaluate(["json_valid < 0.95"], good[:50] + bad, NOW, task_for=lambda model: TASK)
    assert result["fired"] is True


def test_undefined_metrics_do_not_fire():
    records = [record(i, dt.timedelta(minutes=30), latency_ms=9000.0, response="no json") for i in range(10)]
    results = evaluate(["json_valid < 0.95", "p95_latency_ms > 2000 over 10m", "p95_latency_ms > 2000"], records, NOW)
    assert [(r["value"], r["fired"]) for r in results] == [(None, False), (None, False), (9000.0, True)]


def test_drift_rule_follows_the_verdict():
    records = traffic(errors_ago=dt.timedelta(minutes=10))
    assert evaluate(["drift"], records, NOW, drift={"drift": True})[0]["fired"] is True
    assert evaluate(["drift"], records, NOW, drift={"drift": False})[0]["fired"] is False
    assert evaluate(["drift"], records, NOW, drift={"drift": None})[0]["fired"] is False  # too few samples
    [result] = evaluate(["drift"], records, NOW)
    assert result == {"rule": "drift", "metric": "drift", "value": None, "threshold": None, "fired": False,
                      "window": None}
    with pytest.raises(TuneloopError, match="no 'drift' key"):
        evaluate(["drift"], records, NOW, drift={"verdict": True})


# --- delivery -----------------------------------------------------------------------------------

def fired_alerts() -> list[dict]:
    return [r for r in evaluate(["error_rate > 0.02 over 5m", "requests < 1"],
                                traffic(errors_ago=dt.timedelta(minutes=1)), NOW) if r["fired"]]


def log_lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_deliver_posts_one_payload_and_logs_each_alert(webhook, tmp_path):
    url, received = webhook
    fired = fired_alerts()
    assert len(fired) == 1
    result = deliver(fired, tmp_path / "alerts" / "alerts.jsonl", url + "/hooks/T0KEN")
    assert result["delivered"] is True and result["error"] is None and result["alerts"] == 1
    assert result["webhook"] == url  # the token in the path is not echoed
    [post] = received
    assert post["path"] == "/hooks/T0KEN" and post["content_type"] == "application/json"
    assert post["json"]["source"] == "tuneloop" and post["json"]["alerts"] == fired
    dt.datetime.fromisoformat(post["json"]["at"])
    [line] = log_lines(tmp_path / "alerts" / "alerts.jsonl")
    assert line["kind"] == "alert" and line["rule"] == "error_rate > 0.02 over 5m" and line["at"] == post["json"]["at"]
    deliver(fired, tmp_path / "alerts" / "alerts.jsonl", url)  # appends
    assert len(log_lines(tmp_path / "alerts" / "alerts.jsonl")) == 2


def test_deliver_reports_an_unreachable_webhook_without_raising(tmp_path):
    with socket.socket() as probe:  # a port that was just free and is now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = deliver(fired_alerts(), tmp_path / "alerts.jsonl", f"http://127.0.0.1:{port}/hook", timeout=2.0)
    assert result["delivered"] is False and "webhook not reached" in result["error"]
    alert, failure = log_lines(tmp_path / "alerts.jsonl")
    assert alert["kind"] == "alert"
    assert failure["kind"] == "webhook_error" and failure["error"] == result["error"]


def test_deliver_reports_an_error_status(webhook, tmp_path):
    url, received = webhook
    result = deliver(fired_alerts(), tmp_path / "alerts.jsonl", url + "/broken")
    assert len(received) == 1
    assert result["delivered"] is False and result["error"] == "webhook answered HTTP 500"


def test_deliver_without_webhook_or_alerts(webhook, tmp_path):
    url, received = webhook
    assert deliver([], tmp_path / "alerts.jsonl", url)["delivered"] is False
    assert received == [] and not (tmp_path / "alerts.jsonl").exists()
    result = deliver(fired_alerts(), tmp_path / "alerts.jsonl", None)
    assert result["delivered"] is False and result["error"] is None
    assert len(log_lines(tmp_path / "alerts.jsonl")) == 1
