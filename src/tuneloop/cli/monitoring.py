"""`tuneloop monitor`: report, drift, alerts, feedback export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.artifacts import new_run_dir
from tuneloop.cli.common import Json, Out, RegistryUrl, _emit
from tuneloop.config import load_config
from tuneloop.ui import console

# --- monitor -------------------------------------------------------------------------------------
monitor_app = typer.Typer(help="Production traffic: report, drift, alerts, feedback.", no_args_is_help=True)
Since = Annotated[Optional[str], typer.Option("--since", help="An ISO time, or a duration ago: 30m, 2h, 7d.")]
LogFile = Annotated[Optional[Path], typer.Option("--log", help="Read this JSONL request log instead of the registry's.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML: its monitor and registry sections.")]


def _monitor_setup(config: Path | None, registry: str | None, since: str | None):
    """(config, request log, registry, since): the request log and the registry share one database."""
    from tuneloop.config import PipelineConfig
    from tuneloop.db import Database
    from tuneloop.db.requestlog import RequestStore
    from tuneloop.monitor.logstats import parse_since
    from tuneloop.registry.store import Registry

    cfg = load_config(config) if config else PipelineConfig()
    database = Database(registry or cfg.registry.url)
    return cfg, RequestStore(database), Registry(database), parse_since(since) if since else None


@monitor_app.command("report")
def monitor_report(since: Since = None, registry: RegistryUrl = None, log: LogFile = None, config: ConfigFile = None,
                   out: Out = None, bucket: Annotated[Optional[str], typer.Option(help="Time bucket of the plots, e.g. 1m.")] = None,
                   drift_model: Annotated[Optional[str], typer.Option("--drift", help="Also check drift of this served version.")] = None,
                   as_json: Json = False) -> None:
    """Requests, errors, latency, tokens/s and reference-free quality, per model and variant; HTML report."""
    from tuneloop.monitor import checks

    cfg, traffic, versions, start = _monitor_setup(config, registry, since)
    drift_result = checks.drift(traffic, versions, drift_model, cfg.monitor.drift, since=start, log=log) if drift_model else None
    result = checks.report(traffic, versions, out or new_run_dir(Path("runs"), "monitor"), since=start, log=log, bucket=bucket,
                           drift=drift_result)
    console.print(_summary_table(result["summary"]))
    if drift_result:
        console.print(f"drift of {drift_result['model']}: [bold]{drift_result['verdict']}[/]")
    console.print(f"report -> {result['files'][-1]}")
    _emit(result, as_json)


def _summary_table(summary: dict):
    from rich.table import Table

    from tuneloop.monitor.report import COLUMNS, cell

    shown = [c for c in COLUMNS if c[0] in ("requests", "error_rate", "p50_latency_ms", "p95_latency_ms", "tokens_per_s", "json_valid", "refusal",
                                                 "harmful_rate")]
    table = Table(title=f"{summary['overall']['requests']} requests, {summary.get('first') or '-'} .. {summary.get('last') or '-'}")
    for name in ("model", "variant", *(name for name, _ in shown)):
        table.add_column(name)
    for label, variant, metrics in [("all", "", summary["overall"]), *((g["model"], g.get("variant") or "", g) for g in summary["groups"])]:
        table.add_row(label, variant, *(cell(metrics.get(name), fmt) for name, fmt in shown))
    return table


@monitor_app.command("drift")
def monitor_drift(model: Annotated[str, typer.Argument(help="Served version: NAME, NAME:VERSION or NAME@ALIAS.")],
                  since: Since = None, registry: RegistryUrl = None, log: LogFile = None, config: ConfigFile = None,
                  as_json: Json = False) -> None:
    """Compare production inputs and answers with the version's training data; exit 1 on drift."""
    from tuneloop.monitor import checks

    cfg, traffic, versions, start = _monitor_setup(config, registry, since)
    result = checks.drift(traffic, versions, model, cfg.monitor.drift, since=start, log=log)
    console.print(f"{result['model']}: [bold]{result['verdict']}[/] ({result['n_current']} requests vs {result['n_reference']} training rows)")
    if result["verdict"] == "too few samples":
        console.print(f"  no verdict: each side needs at least {result['min_samples']} texts (monitor.drift.min_samples); "
                      f"widen --since or wait for more traffic")
    for check in result["checks"]:
        console.print(f"  {'DRIFT' if check['drift'] else 'ok   '} {check['name']}: {check['detail']}")
    _emit(result, as_json)
    if result["drift"]:
        raise typer.Exit(1)


@monitor_app.command("alerts")
def monitor_alerts(config: Annotated[Path, typer.Argument(help="Pipeline YAML with monitor.alerts (and monitor.webhook).")],
                   registry: RegistryUrl = None, log: LogFile = None,
                   drift_model: Annotated[Optional[str], typer.Option("--drift", help="Served version for 'drift' rules.")] = None,
                   alert_log: Annotated[Optional[Path], typer.Option(help="Where fired alerts are appended (JSONL).")] = None,
                   as_json: Json = False) -> None:
    """Evaluate the alert rules now (for cron); fired alerts are logged and POSTed; exit 1 when any fired."""
    from tuneloop.artifacts import tuneloop_home
    from tuneloop.monitor import checks

    cfg, traffic, versions, _ = _monitor_setup(config, registry, None)
    drift_result = checks.drift(traffic, versions, drift_model, cfg.monitor.drift, log=log) if drift_model else None
    result = checks.check_alerts(traffic, versions, cfg.monitor, alert_log or tuneloop_home() / "alerts.jsonl", log=log,
                                 drift_result=drift_result)
    for r in result["results"]:
        value = "-" if r["value"] is None else f"{r['value']:.4g}"
        console.print(f"  {'[red]FIRED[/]' if r['fired'] else 'ok   '} {r['rule']} (now {value})")
    if result["fired"] and result["delivery"].get("error"):
        console.print(f"[yellow]webhook not delivered:[/] {result['delivery']['error']}")
    _emit(result, as_json)
    if result["fired"]:
        raise typer.Exit(1)


@monitor_app.command("export-feedback")
def monitor_export_feedback(out: Annotated[Path, typer.Option("--out", help="JSONL file to write.")],
                            since: Since = None, registry: RegistryUrl = None, config: ConfigFile = None,
                            min_score: Annotated[Optional[float], typer.Option(help="Score that counts as approved.")] = None,
                            as_json: Json = False) -> None:
    """Corrected and approved responses as a chat data set (PII-redacted) for the next round."""
    from tuneloop.monitor.feedback import export_feedback

    cfg, traffic, _, start = _monitor_setup(config, registry, since)
    result = export_feedback(traffic, out, since=start, min_score=cfg.loop.min_score if min_score is None else min_score, pii=cfg.data.pii)
    console.print(f"{result['rows']} rows ({result['corrected']} corrected, {result['approved']} approved) -> {out}; "
                  f"skipped {result['skipped'] or 'none'}; PII redacted {result['pii_redacted'] or 'none'}")
    _emit(result, as_json)
