"""Alert rules over the request log, and their delivery to an alert log and a webhook.

A rule (one string of the config list `monitor.alerts`) is `METRIC OP NUMBER [over DURATION]`:
METRIC is a key of `logstats.window_metrics`, OP one of > >= < <=, DURATION like 30s, 5m, 2h, 1d
(without it the rule looks at every record given). Examples: `error_rate > 0.02 over 5m`,
`json_valid < 0.95`, `p95_latency_ms > 2000 over 10m`. The bare word `drift` fires when the drift
verdict passed in says drift. A metric that is undefined (no requests in the window, json_valid
without an output schema) never fires: silence there is not a verdict.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx

from tuneloop.errors import TuneloopError
from tuneloop.monitor.logstats import WINDOW_METRICS, TaskFor, no_task, parse_duration, to_utc, window_metrics

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
_RULE = re.compile(r"\s*(?P<metric>\w+)\s*(?P<op>>=|<=|>|<)\s*(?P<number>\S+?)(?:\s+over\s+(?P<window>\S+))?\s*")
SYNTAX = ("write METRIC OP NUMBER [over DURATION] with OP one of > >= < <= (e.g. 'error_rate > 0.02 over 5m'), "
          "or 'drift'")


@dataclass(frozen=True)
class Rule:
    text: str
    metric: str  # a key of logstats.WINDOW_METRICS, or "drift"
    op: str | None = None  # None for drift
    threshold: float | None = None
    window: dt.timedelta | None = None  # None: every record given
    window_text: str | None = None


def parse_rule(text: str, where: str = "alert rule") -> Rule:
    """One rule string as a Rule, or a TuneloopError that names the rule and says what is allowed."""
    if not isinstance(text, str):
        raise TuneloopError(f"{where}: expected a string like 'error_rate > 0.02 over 5m', got {type(text).__name__}")
    if text.strip() == "drift":
        return Rule(text=text, metric="drift")
    match = _RULE.fullmatch(text)
    if match is None:
        raise TuneloopError(f"{where} '{text}': cannot parse it; {SYNTAX}")
    metric = match["metric"]
    if metric not in WINDOW_METRICS:
        raise TuneloopError(f"{where} '{text}': unknown metric '{metric}'; the metrics are "
                            f"{', '.join(WINDOW_METRICS)} (or the bare word 'drift')")
    try:
        threshold = float(match["number"])
    except ValueError:
        threshold = math.nan
    if not math.isfinite(threshold):
        raise TuneloopError(f"{where} '{text}': '{match['number']}' is not a number; {SYNTAX}")
    window = None
    if match["window"] is not None:
        try:
            window = parse_duration(match["window"])
        except TuneloopError as err:
            raise TuneloopError(f"{where} '{text}': {err}") from None
    return Rule(text=text, metric=metric, op=match["op"], threshold=threshold, window=window,
                window_text=match["window"])


def parse_rules(texts: list[str]) -> list[Rule]:
    """The config list `monitor.alerts` as Rules; an error names the entry by its index."""
    return [parse_rule(text, where=f"monitor.alerts[{i}]") for i, text in enumerate(texts)]


def evaluate(rules: list[str | Rule], records: list[dict[str, Any]], now: dt.datetime,
             drift: dict[str, Any] | None = None, task_for: TaskFor = no_task) -> list[dict[str, Any]]:
    """One result per rule: {rule, metric, value, threshold, fired, window}.

    `drift` is a drift verdict with a boolean (or None: no verdict) under the key "drift".
    """
    parsed = [rule if isinstance(rule, Rule) else parse_rule(rule, where=f"alert rule {i}")
              for i, rule in enumerate(rules)]
    if drift is not None and "drift" not in drift:
        raise TuneloopError(f"drift verdict has no 'drift' key (keys: {sorted(drift)}); pass the dict the drift "
                            f"check returns, or None when there is no verdict")
    now = to_utc(now, "now")
    windows: dict[dt.timedelta | None, dict[str, float | None]] = {}  # rules sharing a window share its metrics
    results = []
    for rule in parsed:
        if rule.metric == "drift":
            verdict = None if drift is None else drift["drift"]
            value = None if verdict is None else bool(verdict)
            fired = bool(value)
        else:
            if rule.window not in windows:
                windows[rule.window] = window_metrics(records, now, rule.window, task_for)
            value = windows[rule.window][rule.metric]
            fired = value is not None and OPERATORS[rule.op](value, rule.threshold)
        results.append({"rule": rule.text, "metric": rule.metric, "value": value, "threshold": rule.threshold,
                        "fired": fired, "window": rule.window_text})
    return results


def deliver(fired: list[dict[str, Any]], log_path: Path, webhook: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """Append the fired alerts to the alert log (JSONL) and POST them to the webhook in one payload.

    A webhook failure never raises: it is returned (delivered False, error) and written to the log.
    Returns {"alerts", "log", "webhook", "delivered", "error"}; delivered is False when nothing was sent.
    """
    at = dt.datetime.now(dt.UTC).isoformat()
    log_path = Path(log_path)
    result = {"alerts": len(fired), "log": str(log_path), "webhook": _where(webhook), "delivered": False,
              "error": None}
    if not fired:
        return result
    lines = [{"at": at, "kind": "alert", **alert} for alert in fired]
    _append(log_path, lines)
    if webhook:
        payload = {"source": "tuneloop", "alerts": fired, "at": at}
        try:
            response = httpx.post(webhook, json=payload, timeout=timeout)
            response.raise_for_status()
            result["delivered"] = True
        except httpx.HTTPStatusError as err:
            result["error"] = f"webhook answered HTTP {err.response.status_code}"
        except (httpx.HTTPError, httpx.InvalidURL) as err:
            result["error"] = f"webhook not reached: {type(err).__name__}: {err}"
        if result["error"]:
            _append(log_path, [{"at": at, "kind": "webhook_error", "webhook": result["webhook"],
                                "error": result["error"], "alerts": len(fired)}])
    return result


def _append(path: Path, lines: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as sink:
        sink.writelines(json.dumps(line, ensure_ascii=False, default=str) + "\n" for line in lines)


def _where(webhook: str | None) -> str | None:
    """The webhook's scheme and host only: its path often holds a secret token (Slack, Teams)."""
    if not webhook:
        return None
    parts = urlsplit(webhook)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts.scheme and parts.netloc else "(not a URL)"
