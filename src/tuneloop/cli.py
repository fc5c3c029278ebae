"""Command line: one verb per stage, dispatched from the table at the bottom of this file.

    tuneloop data prepare INPUT... --out DIR [--config FILE]
    tuneloop train CONFIG --data DIR [--out DIR]
    tuneloop eval CONFIG --model RUN_DIR --data DIR [--out DIR]
    tuneloop registry list|show|register|alias|rollback|history|delete
    tuneloop serve [--model NAME[:VERSION|@ALIAS]|RUN_DIR]... [--routes FILE] [--port P] [--api-key KEY]...
    tuneloop rag index|add|remove|search
    tuneloop route train ROUTER --out DIR
    tuneloop monitor report|drift|alerts|export-feedback
    tuneloop run CONFIG [--out DIR] [--json]
    tuneloop loop CONFIG [--out DIR] [--json]
    tuneloop demo [--json] [--out DIR]

A TuneloopError (bad input, missing file, unknown model) prints one line and exits with code 2.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.artifacts import new_run_dir, read_manifest
from tuneloop.config import PipelineConfig, load_config
from tuneloop.errors import TuneloopError
from tuneloop.ui import console

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_CONFIG = EXAMPLES / "ticket_triage" / "pipeline.yaml"

Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on the last line of stdout.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: a new one under ./runs).")]


def _quiet_libraries() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices meant for library authors


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=str))


# --- data ----------------------------------------------------------------------------------------
data_app = typer.Typer(help="Validate, clean and split raw data.", no_args_is_help=True)


@data_app.command("prepare")
def data_prepare(
    inputs: Annotated[list[Path], typer.Argument(help="JSONL files.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    config: Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML (data, task and model sections).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model whose tokenizer measures lengths (default: the config's).")] = None,
    as_json: Json = False,
) -> None:
    from tuneloop.config import ModelConfig
    from tuneloop.data.prepare import prepare

    _quiet_libraries()
    cfg = load_config(config) if config else PipelineConfig()
    model_cfg = ModelConfig(name=model) if model else (cfg.model if config else None)
    report = prepare(inputs, out, cfg.data, cfg.task, model_cfg)
    for source, forms in report["forms"].items():
        console.print(f"{source}: detected form {', '.join(f'{form} ({n})' for form, n in forms.items())}")
    console.print(f"{report['kept']} kept {report['splits']}, {report['rejected']} rejected {report['rejected_by_rule']}, "
                  f"PII redacted {report['pii_redacted']} -> {out / 'report.html'}")
    _emit(report, as_json)


# --- train / eval --------------------------------------------------------------------------------
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    data: Annotated[Path, typer.Option("--data", help="Directory written by `tuneloop data prepare`.")],
    out: Out = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the pre-flight estimate and measured speed; do not train.")] = False,
    as_json: Json = False,
) -> None:
    """Fine-tune (LoRA, DoRA, QLoRA or full; SFT or DPO) on a prepared data directory.

    Runs data-parallel when started by `torchrun` or `accelerate launch`."""
    from tuneloop.train.trainer import train

    _quiet_libraries()
    cfg = load_config(config)
    read_manifest(data)
    if resume and out is None:
        raise TuneloopError("--resume needs --out: the run directory whose checkpoints to continue from")
    if out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TuneloopError("under torchrun / accelerate launch, give --out: every process must write to the same run directory")
    if out is None:
        out = Path("runs") / "dry-run" if dry_run else new_run_dir(Path("runs"), f"{cfg.name}-train")  # a dry run writes nothing
    summary = train(cfg.train, cfg.model, data, out, resume=resume, dry_run=dry_run)
    _emit(summary, as_json)


class _DefaultCommand(typer.core.TyperGroup):
    """A verb group whose first command is the default: `tuneloop eval CONFIG ...` means `eval run`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [next(iter(self.commands)), *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_DefaultCommand, help="Evaluate against baselines; blind A/B for humans.", no_args_is_help=True)


@eval_app.command("run")
def eval_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    data: Annotated[Path, typer.Option("--data", help="Directory written by `tuneloop data prepare`.")],
    model: Annotated[Optional[str], typer.Option("--model", help="Train run dir, registry NAME[:VERSION], or a model folder.")] = None,
    registry: Annotated[Optional[str], typer.Option("--registry", help="SQLAlchemy URL of the registry.")] = None,
    out: Out = None,
    as_json: Json = False,
) -> None:
    """Fine-tuned vs base, prompt-engineered and RAG baselines on the test split; exit 1 when a gate fails.

    `tuneloop eval CONFIG ...` is short for `tuneloop eval run CONFIG ...`."""
    from tuneloop.eval.evaluate import evaluate
    from tuneloop.pipeline import metrics_table

    _quiet_libraries()
    cfg = load_config(config)
    weights = _resolve_weights(model, registry) if model else None
    out = out or new_run_dir(Path("runs"), f"{cfg.name}-eval")
    results = evaluate(cfg.eval, cfg.model, cfg.task, cfg.objective, data, weights, out)
    console.print(metrics_table(results))
    console.print(f"report -> {out / 'report.html'}")
    _emit(results, as_json)
    if not results["objective_passed"]:
        failed = [f"{g['metric']} {g['value']:.3f} (needs {g['gate']}, missed by {-g['margin']:.3f})" for g in results["gates"] if not g["passed"]]
        console.print(f"[red]objective not met:[/] {'; '.join(failed)}")
        raise typer.Exit(1)


@eval_app.command("ab-export")
def eval_ab_export(
    eval_dir: Annotated[Path, typer.Argument(help="Eval run directory (its samples.jsonl).")],
    out: Out = None,
    a: Annotated[str, typer.Option("--a", help="First system.")] = "finetuned",
    b: Annotated[str, typer.Option("--b", help="Second system.")] = "base",
    seed: int = 0,
    limit: Annotated[Optional[int], typer.Option(help="At most N pairs.")] = None,
    as_json: Json = False,
) -> None:
    """Write blind A/B pairs (hidden, randomised order) as ab.csv and an offline ab.html form for reviewers."""
    from tuneloop.eval.ab import export_ab

    out = out or eval_dir / "ab"
    result = export_ab(eval_dir / "samples.jsonl", out, a, b, seed=seed, limit=limit)
    console.print(f"{result['pairs']} pairs -> {result['csv']} and {result['html']}; keep {result['key']} away from reviewers")
    _emit(result, as_json)


@eval_app.command("ab-import")
def eval_ab_import(
    judgments: Annotated[Path, typer.Argument(help="The filled ab.csv (or the CSV the HTML form downloads).")],
    key: Annotated[Path, typer.Option("--key", help="ab_key.json written by ab-export.")],
    as_json: Json = False,
) -> None:
    """Win/tie/loss of system A against B from reviewers' judgments, with an exact sign test."""
    from tuneloop.eval.ab import import_ab

    r = import_ab(judgments, key)
    p = "n/a" if r["p_value"] is None else f"{r['p_value']:.4f}"
    console.print(f"{r['system_a']} vs {r['system_b']}: {r['wins_a']} wins, {r['ties']} ties, {r['wins_b']} losses "
                  f"({r['unjudged']} unjudged); sign test p = {p}{' (significant)' if r['significant'] else ''}")
    _emit(r, as_json)


def _resolve_weights(ref: str, registry: str | None) -> Path:
    """A train run directory, an adapter or model folder, or a registry NAME[:VERSION]."""
    from tuneloop.models import trained_weights

    path = Path(ref)
    if path.is_dir():
        if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
            return path
        return trained_weights(path)
    train_dir, _ = _resolve_served(ref, registry)
    return trained_weights(train_dir)


def export_cmd(
    run: Annotated[Path, typer.Argument(help="Train run directory (adapter/ or model/ inside).")],
    out: Out = None,
    gguf: Annotated[Optional[str], typer.Option("--gguf", help="Also write model.gguf for llama.cpp/ollama: f16 or f32.")] = None,
    as_json: Json = False,
) -> None:
    """Merge a LoRA/DoRA adapter into its base and write a plain model folder (safetensors), optionally GGUF."""
    from tuneloop.models.export import export_run

    _quiet_libraries()
    if gguf not in (None, "f16", "f32"):
        raise TuneloopError(f"--gguf must be f16 or f32, got '{gguf}'")
    result = export_run(run, out or new_run_dir(Path("runs"), f"{run.name}-export"), gguf)
    console.print(f"merged model -> {result['model']}" + (f", GGUF -> {result['gguf']}" if result["gguf"] else ""))
    _emit(result, as_json)


# --- registry ------------------------------------------------------------------------------------
registry_app = typer.Typer(help="Versioned models with lineage; aliases (name@production) with an audit log.", no_args_is_help=True)
RegistryUrl = Annotated[Optional[str], typer.Option("--registry", help="SQLAlchemy URL (default: sqlite under TUNELOOP_HOME).")]
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


# --- serve ---------------------------------------------------------------------------------------
def serve_cmd(
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Load at start: registry NAME[:VERSION|@ALIAS] or a train run directory (repeatable).")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model the adapters share (default: the first --model's base).")] = None,
    registry: RegistryUrl = None,
    routes: Annotated[Optional[Path], typer.Option("--routes", help="YAML with A/B traffic splits per route name.")] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="Require this bearer key (repeatable; or TUNELOOP_API_KEYS).")] = None,
    max_batch: Annotated[int, typer.Option(help="Requests generated together per model.")] = 16,
    max_queue: Annotated[int, typer.Option(help="Waiting requests per model before answering 429.")] = 64,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 1024,
    timeout: Annotated[float, typer.Option(help="Seconds a request may take, queueing included.")] = 120.0,
    request_log: Annotated[str, typer.Option(help="Where requests are logged: registry, off, or a .jsonl path.")] = "registry",
    router: Annotated[Optional[Path], typer.Option("--router", help="Router YAML: one model name that picks a model per request.")] = None,
    knowledge: Annotated[Optional[list[str]], typer.Option("--knowledge", help="NAME=DIR: answer NAME's requests with context from this knowledge base (repeatable).")] = None,
    jobs: Annotated[bool, typer.Option(help="Serve the fine-tuning jobs API and run its jobs.")] = True,
    launcher: Annotated[Optional[str], typer.Option(help="Run jobs under this launcher, e.g. 'accelerate launch --num_processes 4'.")] = None,
) -> None:
    """Serve models behind an OpenAI-compatible API: many adapters on one base, A/B routes, batching."""
    import uvicorn

    from tuneloop.serve.handler import Limits
    from tuneloop.serve.server import ServeOptions, build_app

    _quiet_libraries()
    options = ServeOptions(models=model or [], base=base, registry=registry, routes=routes, api_keys=api_key or _env_keys(),
                           request_log=request_log, max_batch=max_batch, max_queue=max_queue,
                           limits=Limits(max_tokens=max_tokens, timeout=timeout), jobs=jobs, launcher=launcher,
                           router=router, knowledge=_pairs(knowledge or [], "--knowledge"))
    app, catalog = build_app(options)
    console.print(f"serving {', '.join(catalog.listing())} on http://{host}:{port}/v1 (base {catalog.base})")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=timeout)


def _resolve_served(model: str, registry: str | None) -> tuple[Path, str]:
    if Path(model).is_dir():
        return Path(model), Path(model).resolve().parent.name
    from tuneloop.registry.store import Registry

    version = Registry(registry).resolve(model)
    return Path(version["artifact_path"]), model


def _pairs(items: list[str], option: str) -> dict[str, Path]:
    pairs = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise TuneloopError(f"{option} {item!r}: write NAME=DIR, e.g. {option} support=kb/")
        pairs[name] = Path(folder)
    return pairs


def _env_keys() -> list[str] | None:
    keys = [k for k in os.environ.get("TUNELOOP_API_KEYS", "").split(",") if k]
    return keys or None


# --- knowledge bases -----------------------------------------------------------------------------
rag_app = typer.Typer(help="Knowledge bases for retrieval-augmented answers.", no_args_is_help=True)
Docs = Annotated[list[Path], typer.Argument(help="Files or folders: Markdown, text, HTML, PDF, JSONL.")]
KbDir = Annotated[Path, typer.Argument(help="Knowledge base folder (from `tuneloop rag index`).")]


@rag_app.command("index")
def rag_index(docs: Docs, out: Annotated[Path, typer.Option("--out", help="Folder to write the knowledge base to.")],
              max_words: int = 120, overlap: int = 30, as_json: Json = False) -> None:
    """Chunk the documents, embed the chunks (MiniLM) and build the vector + BM25 index."""
    from tuneloop.rag.index import KnowledgeBase

    knowledge = KnowledgeBase.build(docs, out, max_words, overlap)  # ids: paths relative to each folder given
    console.print(f"{len(knowledge.documents())} documents, {len(knowledge)} chunks -> {out}")
    _emit({"out": str(out), "documents": len(knowledge.documents()), "chunks": len(knowledge)}, as_json)


@rag_app.command("add")
def rag_add(index: KbDir, docs: Docs, as_json: Json = False) -> None:
    """Add new documents and replace changed ones, embedding only their chunks."""
    from tuneloop.rag.index import KnowledgeBase

    knowledge = KnowledgeBase.load(index)
    report = knowledge.add(docs)
    knowledge.save()
    console.print(f"added {len(report['added'])}, replaced {len(report['replaced'])}, unchanged {len(report['unchanged'])}; "
                  f"{len(knowledge)} chunks now")
    _emit(report, as_json)


@rag_app.command("remove")
def rag_remove(index: KbDir, ids: Annotated[list[str], typer.Argument(help="Document ids or source paths.")], as_json: Json = False) -> None:
    """Remove documents from the knowledge base."""
    from tuneloop.rag.index import KnowledgeBase

    knowledge = KnowledgeBase.load(index)
    report = knowledge.remove(ids)
    knowledge.save()
    console.print(f"removed {report['removed'] or 'nothing'}" + (f"; not found: {report['not_found']}" if report["not_found"] else ""))
    _emit(report, as_json)


@rag_app.command("search")
def rag_search(index: KbDir, query: str, k: int = 3, mode: str = "hybrid", as_json: Json = False) -> None:
    """Show the passages a question retrieves."""
    from tuneloop.rag.index import KnowledgeBase
    from tuneloop.rag.template import sources

    hits = KnowledgeBase.load(index).search(query, k=k, mode=mode)
    for n, hit in enumerate(hits, 1):
        console.print(f"[{n}] {hit.chunk.doc_id} ({hit.score:.4f}): {hit.chunk.text[:160]}")
    _emit({"hits": sources(hits)}, as_json)


# --- routing ------------------------------------------------------------------------------------
route_app = typer.Typer(help="Route requests between several served models.", no_args_is_help=True)


@route_app.command("train")
def route_train(router: Annotated[Path, typer.Argument(help="Router YAML (its routes' examples are training data).")],
                out: Annotated[Path, typer.Option("--out", help="Folder for the classifier; point router.classifier at it.")],
                examples: Annotated[Optional[Path], typer.Option(help="More labelled prompts: JSONL of {text, route}.")] = None,
                seed: int = 0, as_json: Json = False) -> None:
    """Train the router's classifier (logistic regression on MiniLM embeddings) and report its accuracy."""
    from tuneloop.serve.router import load_router_config, read_examples, train_router

    report = train_router(load_router_config(router), read_examples(examples) if examples else None, out, seed=seed)
    console.print(f"router classifier -> {out}: accuracy {report['accuracy']:.3f} ({report.get('method', '')})")
    _emit(report, as_json)


# --- monitor -------------------------------------------------------------------------------------
monitor_app = typer.Typer(help="Production traffic: report, drift, alerts, feedback.", no_args_is_help=True)
Since = Annotated[Optional[str], typer.Option("--since", help="An ISO time, or a duration ago: 30m, 2h, 7d.")]
LogFile = Annotated[Optional[Path], typer.Option("--log", help="Read this JSONL request log instead of the registry's.")]
ConfigFile = Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML: its monitor and registry sections.")]


def _monitor_setup(config: Path | None, registry: str | None, since: str | None):
    from tuneloop.config import PipelineConfig
    from tuneloop.monitor.logstats import parse_since
    from tuneloop.registry.store import Registry

    cfg = load_config(config) if config else PipelineConfig()
    return cfg, Registry(registry or cfg.registry.url), parse_since(since) if since else None


@monitor_app.command("report")
def monitor_report(since: Since = None, registry: RegistryUrl = None, log: LogFile = None, config: ConfigFile = None,
                   out: Out = None, bucket: Annotated[Optional[str], typer.Option(help="Time bucket of the plots, e.g. 1m.")] = None,
                   drift_model: Annotated[Optional[str], typer.Option("--drift", help="Also check drift of this served version.")] = None,
                   as_json: Json = False) -> None:
    """Requests, errors, latency, tokens/s and reference-free quality, per model and variant; HTML report."""
    from tuneloop.monitor import checks

    cfg, store, start = _monitor_setup(config, registry, since)
    drift_result = checks.drift(store, drift_model, cfg.monitor.drift, since=start, log=log) if drift_model else None
    result = checks.report(store, out or new_run_dir(Path("runs"), "monitor"), since=start, log=log, bucket=bucket, drift=drift_result)
    console.print(_summary_table(result["summary"]))
    if drift_result:
        console.print(f"drift of {drift_result['model']}: [bold]{drift_result['verdict']}[/]")
    console.print(f"report -> {result['files'][-1]}")
    _emit(result, as_json)


def _summary_table(summary: dict):
    from rich.table import Table

    from tuneloop.monitor.report import COLUMNS, cell

    shown = [c for c in COLUMNS if c[0] in ("requests", "error_rate", "p50_latency_ms", "p95_latency_ms", "tokens_per_s", "json_valid", "refusal")]
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

    cfg, store, start = _monitor_setup(config, registry, since)
    result = checks.drift(store, model, cfg.monitor.drift, since=start, log=log)
    console.print(f"{result['model']}: [bold]{result['verdict']}[/] ({result['n_current']} requests vs {result['n_reference']} training rows)")
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

    cfg, store, _ = _monitor_setup(config, registry, None)
    drift_result = checks.drift(store, drift_model, cfg.monitor.drift, log=log) if drift_model else None
    result = checks.check_alerts(store, cfg.monitor, alert_log or tuneloop_home() / "alerts.jsonl", log=log, drift_result=drift_result)
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

    cfg, store, start = _monitor_setup(config, registry, since)
    result = export_feedback(store, out, since=start, min_score=cfg.loop.min_score if min_score is None else min_score, pii=cfg.data.pii)
    console.print(f"{result['rows']} rows ({result['corrected']} corrected, {result['approved']} approved) -> {out}; "
                  f"skipped {result['skipped'] or 'none'}; PII redacted {result['pii_redacted'] or 'none'}")
    _emit(result, as_json)


# --- pipelines -----------------------------------------------------------------------------------
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    out: Out = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Override train.max_steps.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test rows.")] = None,
    as_json: Json = False,
) -> None:
    """Run the whole pipeline: data -> train -> eval -> register."""
    result, _ = _run_pipeline(config, out, max_steps, limit)
    from tuneloop.pipeline import serve_hint

    console.print(serve_hint(result["model"]))
    _emit(result, as_json)


def _run_pipeline(config: Path, out: Path | None, max_steps: int | None, limit: int | None) -> tuple[dict, PipelineConfig]:
    overrides = {k: v for k, v in {"train.max_steps": max_steps, "eval.limit": limit}.items() if v is not None}
    cfg = load_config(config, overrides)  # before the heavy imports: a config mistake is reported at once
    from tuneloop.pipeline import run_pipeline

    _quiet_libraries()
    result = run_pipeline(cfg, out or new_run_dir(Path("runs"), cfg.name))
    verdict = "[green]objective met" if result["objective_passed"] else "[red]objective NOT met"
    console.print(f"{verdict}[/] in {result['wall_s']:.0f} s; run directory {result['run_dir']}")
    return result, cfg


def loop_cmd(config: Annotated[Path, typer.Argument(help="Pipeline YAML.")], out: Out = None, as_json: Json = False) -> None:
    """One round of the loop: feedback + data -> train -> evaluate against production -> register -> promote if better."""
    cfg = load_config(config)
    from tuneloop.loop import run_loop

    _quiet_libraries()
    result = run_loop(cfg, out or new_run_dir(Path("runs"), f"{cfg.name}-loop"))
    _emit(result, as_json)
    if not result["promoted"]:
        raise typer.Exit(1)


def demo_cmd(out: Out = None, max_steps: Annotated[Optional[int], typer.Option(help="Override train.max_steps.")] = None,
             limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test rows.")] = None,
             traffic: Annotated[bool, typer.Option(help="End with a simulated traffic burst and its monitoring report.")] = True,
             as_json: Json = False) -> None:
    """The whole loop offline on the embedded SmolLM2-135M-Instruct and the support-ticket example."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo needs ships with the install
    if not DEMO_CONFIG.is_file():
        raise TuneloopError(f"{DEMO_CONFIG}: demo config not found; run the demo from a tuneloop checkout")
    result, cfg = _run_pipeline(DEMO_CONFIG, out, max_steps, limit)
    if traffic:
        from tuneloop.monitor.simulate import traffic_burst
        from tuneloop.registry.store import Registry

        console.rule("[bold]then: serve it and watch simulated traffic")
        run_dir = Path(result["run_dir"])
        burst = traffic_burst(Registry(cfg.registry.url), cfg.model.name, result["model"], run_dir / "data", run_dir / "monitor",
                              max_tokens=cfg.eval.max_new_tokens)
        console.print(_summary_table(burst["summary"]))
        console.print(f"HTTP statuses {burst['statuses']}; monitoring report -> {burst['files'][-1]}")
        result["monitoring"] = burst["summary"]["overall"]
    from tuneloop.pipeline import serve_hint

    console.print(serve_hint(result["model"]))
    _emit(result, as_json)


# --- the verb table ------------------------------------------------------------------------------
app = typer.Typer(help="tuneloop: fine-tune open LLMs, from raw data to a served model and back.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
VERBS = {
    "data": data_app,
    "train": train_cmd,
    "eval": eval_app,
    "export": export_cmd,
    "registry": registry_app,
    "serve": serve_cmd,
    "rag": rag_app,
    "route": route_app,
    "monitor": monitor_app,
    "run": run_cmd,
    "loop": loop_cmd,
    "demo": demo_cmd,
}
for verb, target in VERBS.items():
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=verb)
    else:
        app.command(verb)(target)


def main() -> None:
    try:
        app()
    except TuneloopError as err:
        console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # `torchrun -m tuneloop.cli train ...` runs the module
    main()
