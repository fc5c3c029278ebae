"""`tuneloop registry`: versions, aliases, rollback, history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.cli.common import Json, RegistryUrl, _emit
from tuneloop.ui import console

# --- registry ------------------------------------------------------------------------------------
registry_app = typer.Typer(help="Versioned models with lineage; aliases (name@production) with an audit log.", no_args_is_help=True)
Reason = Annotated[str, typer.Option("--reason", help="Why: kept in the alias history.")]
Actor = Annotated[Optional[str], typer.Option("--actor", help="Who, for the alias history (default: your user name).")]


def _open_registry(url: str | None):
    from tuneloop.registry.store import Registry

    return Registry(url)


def _say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)  # names and reasons are not rich markup


def _columns(header: list[str], rows: list[list[str]]) -> None:
    """Left-aligned columns, one line per row: compact, and greppable when piped."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]
    for row in [header, *rows]:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _event_line(e: dict) -> str:
    moved = {"set": f"{e['from_version'] or '-'} -> {e['to_version']}", "rollback": f"{e['from_version']} -> {e['to_version']} (rollback)",
             "delete": f"{e['from_version']} -> removed"}[e["action"]]
    return f"{e['name']}@{e['alias']}: {moved} by {e['actor']}" + (f": {e['reason']}" if e["reason"] else "")


@registry_app.command("list")
def registry_list(name: Annotated[Optional[str], typer.Argument()] = None, registry: RegistryUrl = None, as_json: Json = False) -> None:
    """Versions (of one model, or all), with the aliases pointing at each."""
    versions = _open_registry(registry).versions(name)
    if as_json:
        _emit({"versions": versions}, True)
        return
    rows = []
    for v in versions:
        gated = {g["metric"] for g in v["eval_results"].get("gates", [])}
        metrics = {k: val for k, val in v["eval_results"].get("systems", {}).get("finetuned", {}).items() if k in gated}
        shown = ", ".join(f"{k}={val:.3f}" for k, val in metrics.items())
        rows.append([v["ref"], ",".join(v["aliases"]) or "-", v["created_at"][:16].replace("T", " "), v["method"], v["base_model"], shown])
    if rows:
        _columns(["VERSION", "ALIASES", "CREATED (UTC)", "METHOD", "BASE MODEL", "GATED METRICS"], rows)
    else:
        _say(f"no versions registered{f' for {name}' if name else ''}")


@registry_app.command("show")
def registry_show(ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS.")], registry: RegistryUrl = None,
                  as_json: Json = False) -> None:
    """One version in full: lineage, config, evaluation."""
    version = _open_registry(registry).get(ref)
    if as_json:
        _emit(version, True)
        return
    aliases = f"  (aliases: {', '.join(version['aliases'])})" if version["aliases"] else ""
    _say(f"{version['ref']}{aliases}")
    for key in ("created_at", "artifact_path", "base_model", "method", "data_hash", "note"):
        _say(f"  {key:<14}{version[key]}")
    for key in ("train_config", "eval_results", "task"):
        _say(f"  {key:<14}{json.dumps(version[key], default=str)}")


@registry_app.command("register")
def registry_register(
    name: str,
    train_dir: Annotated[Path, typer.Argument(help="Train run directory.")],
    eval_dir: Annotated[Optional[Path], typer.Option("--eval", help="Eval run directory.")] = None,
    note: str = "",
    registry: RegistryUrl = None,
    as_json: Json = False,
) -> None:
    from tuneloop.registry.lineage import register_run

    version = register_run(_open_registry(registry), name, train_dir, eval_dir, note)
    console.print(f"registered {version['ref']}")
    _emit(version, as_json)


@registry_app.command("alias")
def registry_alias(name: str, alias: str, version: int, reason: Reason = "", actor: Actor = None,
                   registry: RegistryUrl = None, as_json: Json = False) -> None:
    """Point NAME@ALIAS at NAME:VERSION (creating or moving the alias)."""
    event = _open_registry(registry).set_alias(name, alias, version, actor=actor, reason=reason)
    _say(_event_line(event))
    _emit(event, as_json)


@registry_app.command("rollback")
def registry_rollback(name: str, alias: Annotated[str, typer.Option("--alias", help="The alias to move back.")],
                      reason: Reason = "", actor: Actor = None, registry: RegistryUrl = None, as_json: Json = False) -> None:
    """Move NAME@ALIAS back to the version it pointed at before (one step per rollback)."""
    event = _open_registry(registry).rollback(name, alias, actor=actor, reason=reason)
    _say(_event_line(event))
    _emit(event, as_json)


@registry_app.command("history")
def registry_history(name: str, alias: Annotated[Optional[str], typer.Option("--alias", help="Only this alias.")] = None,
                     registry: RegistryUrl = None, as_json: Json = False) -> None:
    """Every alias move of NAME, oldest first: who, when, why."""
    events = _open_registry(registry).history(name, alias)
    if as_json:
        _emit({"events": events}, True)
        return
    rows = [[e["at"][:19].replace("T", " "), f"{e['name']}@{e['alias']}", e["action"], str(e["from_version"] or "-"),
             str(e["to_version"] or "-"), e["actor"], e["reason"]] for e in events]
    if rows:
        _columns(["AT (UTC)", "ALIAS", "ACTION", "FROM", "TO", "ACTOR", "REASON"], rows)
    else:
        _say(f"no alias events for {name}{f'@{alias}' if alias else ''}")


@registry_app.command("delete")
def registry_delete(ref: Annotated[str, typer.Argument(help="NAME:VERSION, NAME (every version), or NAME@ALIAS (only the alias).")],
                    force: Annotated[bool, typer.Option("--force", help="Also remove aliases that point at deleted versions.")] = False,
                    registry: RegistryUrl = None, as_json: Json = False) -> None:
    """Delete versions from the index (their artifacts on disk stay); numbers are never reused."""
    result = _open_registry(registry).delete(ref, force=force)
    if result["deleted"]:
        _say(f"deleted {', '.join(result['deleted'])}")
    if result["aliases_removed"]:
        _say(f"removed aliases {', '.join(result['aliases_removed'])}")
    _emit(result, as_json)
