"""The monitoring report: report.json, timeseries.png (traffic, errors, latency over time, quality per
model/variant) and report.html that shows them with the per-model/variant table and any drift verdict."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tuneloop.layout import MonitorDir  # noqa: E402

COLUMNS = [("requests", "{:.0f}"), ("error_rate", "{:.1%}"), ("p50_latency_ms", "{:.0f}"), ("p95_latency_ms", "{:.0f}"),
           ("p99_latency_ms", "{:.0f}"), ("ttft_p50_ms", "{:.0f}"), ("tokens_per_s", "{:.1f}"), ("json_valid", "{:.1%}"),
           ("schema_valid", "{:.1%}"), ("empty", "{:.1%}"), ("refusal", "{:.1%}"), ("length_chars", "{:.0f}"),
           ("harmful_rate", "{:.1%}")]


def write_report(summary: dict, series: list[dict], out: Path, drift: dict | None = None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    folder = MonitorDir(out)
    written = [folder.report]
    folder.report.write_text(json.dumps({"summary": summary, "timeseries": series, "drift": drift}, indent=2))
    if series:
        written.append(_plot(series, folder.timeseries_plot))
    written.append(folder.report_html)
    folder.report_html.write_text(_html(summary, drift, plot=folder.timeseries_plot.name if series else None))
    return written


def cell(value: Any, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def _plot(series: list[dict], path: Path) -> Path:
    times = [dt.datetime.fromisoformat(point["start"]) for point in series]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].bar(times, [p["requests"] for p in series], width=_width(times), color="C0")
    axes[0].set_ylabel("requests")
    axes[1].plot(times, [_nan(p["error_rate"]) for p in series], marker="o", color="C3")
    axes[1].set_ylabel("error rate")
    axes[1].set_ylim(bottom=0)
    for key, colour in (("p50_latency_ms", "C2"), ("p95_latency_ms", "C1")):
        axes[2].plot(times, [_nan(p[key]) for p in series], marker="o", color=colour, label=key.split("_")[0])
    axes[2].set_ylabel("latency (ms)")
    axes[2].legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _width(times: list[dt.datetime]) -> float:
    if len(times) < 2:
        return 0.01
    return 0.8 * (times[1] - times[0]).total_seconds() / 86400  # matplotlib dates are in days


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _html(summary: dict, drift: dict | None, plot: str | None) -> str:
    head = "".join(f"<th>{name}</th>" for name, _ in COLUMNS)
    rows = [("all", "", summary["overall"]), *((g["model"], g.get("variant") or "", g) for g in summary["groups"])]
    body = "".join(
        f"<tr><td>{html.escape(model)}</td><td>{html.escape(variant)}</td>"
        + "".join(f"<td>{cell(metrics.get(name), fmt)}</td>" for name, fmt in COLUMNS) + "</tr>"
        for model, variant, metrics in rows
    )
    parts = [
        "<!doctype html><meta charset='utf-8'><title>tuneloop monitoring</title>",
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}</style>",
        "<h1>Monitoring report</h1>",
        f"<p>{summary['overall']['requests']} requests from {summary.get('first') or '-'} to {summary.get('last') or '-'}. "
        "Quality scores need no reference: JSON/schema validity (models with a schema), empty and refusal rates, length.</p>",
        f"<table><tr><th>model</th><th>variant</th>{head}</tr>{body}</table>",
    ]
    if plot:
        parts.append(f"<h2>Over time</h2><img src='{plot}' alt='requests, error rate and latency over time'>")
    if drift:
        parts.append(f"<h2>Drift: {html.escape(drift['verdict'])}</h2><table><tr><th>check</th><th>statistic</th>"
                     "<th>p-value</th><th>threshold</th><th>drift</th><th>detail</th></tr>")
        parts += [f"<tr><td>{c['name']}</td><td>{c['statistic']:.4g}</td><td>{cell(c['p_value'], '{:.3g}')}</td>"
                  f"<td>{c['threshold']:g}</td><td>{'yes' if c['drift'] else 'no'}</td><td>{html.escape(c['detail'])}</td></tr>"
                  for c in drift["checks"]]
        parts.append("</table>")
    return "\n".join(parts)
