"""`tuneloop serve`, knowledge bases (`tuneloop rag`) and routers (`tuneloop route`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.cli.common import Json, RegistryUrl, _emit, _quiet_libraries
from tuneloop.errors import TuneloopError
from tuneloop.ui import console

# --- serve ---------------------------------------------------------------------------------------
ReadKey = Annotated[Optional[list[str]], typer.Option("--read-key", help="A key that may only look: the dashboard and GET routes (repeatable; or TUNELOOP_READ_KEYS).")]
Runs = Annotated[Path, typer.Option("--runs", help="The runs folder the dashboard shows.")]


def serve_cmd(
    model: Annotated[Optional[list[str]], typer.Option("--model", help="Load at start: registry NAME[:VERSION|@ALIAS] or a train run directory (repeatable).")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="Base model the adapters share (default: the first --model's base).")] = None,
    registry: RegistryUrl = None,
    routes: Annotated[Optional[Path], typer.Option("--routes", help="YAML with A/B traffic splits per route name.")] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on (default 127.0.0.1, or serve.host).")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port (default 8000, or serve.port).", min=1, max=65535)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML: its serve section gives host, port and engine.")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="Require this bearer key (repeatable; or TUNELOOP_API_KEYS).")] = None,
    read_key: ReadKey = None,
    runs: Runs = Path("runs"),
    dashboard: Annotated[bool, typer.Option(help="Serve the web dashboard at /ui.")] = True,
    max_batch: Annotated[int, typer.Option(help="Requests generated together per model.")] = 16,
    max_queue: Annotated[int, typer.Option(help="Waiting requests per model before answering 429.")] = 64,
    prefix_cache_mb: Annotated[int, typer.Option(help="MB of recent prompts' keys and values kept, so a prompt that starts the same way skips that part of prefill (0: off).", min=0, max=1 << 20)] = 256,
    max_tokens: Annotated[int, typer.Option(help="Largest max_tokens a request may ask for.")] = 1024,
    timeout: Annotated[float, typer.Option(help="Seconds a request may take, queueing included (the OpenAI SDK waits 600).")] = 600.0,
    drain_timeout: Annotated[float, typer.Option(help="On SIGTERM: seconds to finish requests in flight before exiting.", min=0)] = 30.0,
    request_log: Annotated[str, typer.Option(help="Where requests are logged: registry, off, or a .jsonl path.")] = "registry",
    router: Annotated[Optional[Path], typer.Option("--router", help="Router YAML: one model name that picks a model per request.")] = None,
    knowledge: Annotated[Optional[list[str]], typer.Option("--knowledge", help="NAME=DIR: answer NAME's requests with context from this knowledge base (repeatable).")] = None,
    alias: Annotated[Optional[list[str]], typer.Option("--alias", help="NAME=REF: answer requests for NAME (e.g. a hosted fine-tune's ft:... name) with REF, a registry reference or run folder (repeatable).")] = None,
    jobs: Annotated[bool, typer.Option(help="Serve the fine-tuning jobs API and run its jobs.")] = True,
    run_jobs: Annotated[bool, typer.Option(help="Run queued jobs here (off: another server on the same database runs them).")] = True,
    launcher: Annotated[Optional[str], typer.Option(help="Run jobs under this launcher, e.g. 'accelerate launch --num_processes 4'.")] = None,
    engine: Annotated[Optional[str], typer.Option(help="What makes the tokens: tuneloop (our engine, the default) or vllm (a vLLM child process per model).")] = None,
    vllm_python: Annotated[Optional[str], typer.Option(help="vLLM's Python (default: TUNELOOP_VLLM_PYTHON, else .venv-vllm/bin/python).")] = None,
    vllm_arg: Annotated[Optional[list[str]], typer.Option("--vllm-arg", help="One more argument for vLLM's server (repeatable), e.g. --vllm-arg=--tensor-parallel-size=2.")] = None,
    vllm_dtype: Annotated[str, typer.Option(help="vLLM's dtype: auto, float32 (answers equal to our engine's on CPU), bfloat16, ...")] = "auto",
    vllm_max_lora_rank: Annotated[int, typer.Option(help="Largest LoRA rank vLLM accepts (8, 16, 32, 64, 128, 256).")] = 64,
) -> None:
    """Serve models behind an OpenAI-compatible API: many adapters on one base, A/B routes, batching."""
    from tuneloop.extras import require

    require("serve", "tuneloop serve")
    from tuneloop.config import PipelineConfig, load_config

    pipeline = load_config(config) if config else PipelineConfig()
    section = pipeline.serve
    host, port, engine = host or section.host, port or section.port, engine or section.engine
    if engine not in ("tuneloop", "vllm"):
        raise TuneloopError(f"--engine {engine!r}: choose tuneloop (the default) or vllm")
    _check_models(model or [], base, registry)  # before the model loads: a typo fails in a second
    from tuneloop.serve.handler import Limits
    from tuneloop.serve.process import DrainingServer
    from tuneloop.serve.vllm_settings import VllmSettings
    from tuneloop.server import ServeOptions, build_app

    _quiet_libraries()
    options = ServeOptions(models=model or [], base=base, registry=registry, routes=routes, api_keys=api_key or _env_keys(),
                           read_keys=read_key or _env_keys("TUNELOOP_READ_KEYS"), runs=runs, dashboard=dashboard,
                           monitor=pipeline.monitor, request_log=request_log, max_batch=max_batch, max_queue=max_queue, prefix_cache_mb=prefix_cache_mb,
                           limits=Limits(max_tokens=max_tokens, timeout=timeout), jobs=jobs, run_jobs=run_jobs, launcher=launcher,
                           router=router, knowledge=_pairs(knowledge or [], "--knowledge"), engine=engine,
                           aliases={name: str(ref) for name, ref in _pairs(alias or [], "--alias", "NAME=REF", "ft:old-model=triage@production").items()},
                           vllm=VllmSettings(python=vllm_python, args=list(vllm_arg or []), dtype=vllm_dtype, max_lora_rank=vllm_max_lora_rank))
    app, catalog = build_app(options)
    console.print(f"serving {', '.join(catalog.listing())} on http://{host}:{port}/v1 (base {catalog.base})"
                  + (f"; dashboard on http://{host}:{port}/ui" if dashboard else ""))
    DrainingServer(app, host=host, port=port, drain_timeout=drain_timeout).run()


def ui_cmd(
    registry: RegistryUrl = None,
    runs: Runs = Path("runs"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8000,
    config: Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML: its monitor section (alert rules, drift).")] = None,
    api_key: Annotated[Optional[list[str]], typer.Option("--api-key", help="Require this key to sign in (repeatable; or TUNELOOP_API_KEYS).")] = None,
    read_key: ReadKey = None,
    run_jobs: Annotated[bool, typer.Option(help="Run the fine-tuning jobs created here (off: a `tuneloop serve` on the same database runs them).")] = False,
) -> None:
    """The web dashboard alone, over a registry and a runs folder: runs, registry, jobs, traffic, review,
    playground (which loads the base model on its first message)."""
    from tuneloop.extras import require

    require("serve", "tuneloop ui")
    from tuneloop.config import PipelineConfig, load_config
    from tuneloop.serve.process import DrainingServer
    from tuneloop.server import ServeOptions, build_app

    _quiet_libraries()
    options = ServeOptions(registry=registry, runs=runs, api_keys=api_key or _env_keys(), read_keys=read_key or _env_keys("TUNELOOP_READ_KEYS"),
                           request_log="off", run_jobs=run_jobs, monitor=(load_config(config) if config else PipelineConfig()).monitor)
    app, _ = build_app(options)
    console.print(f"dashboard on http://{host}:{port}/ui over {runs} and the registry {registry or 'in TUNELOOP_HOME'}")
    DrainingServer(app, host=host, port=port, drain_timeout=10.0).run()


def _check_models(models: list[str], base: str | None, registry: str | None) -> None:
    from tuneloop.models.resolve import check_model

    if base:
        check_model(base)
    refs = [m for m in models if not Path(m).is_dir() and not m.startswith("ft:")]
    if refs:
        from tuneloop.registry.store import Registry

        known = Registry(registry)
        for ref in refs:
            known.resolve(ref)


def _pairs(items: list[str], option: str, form: str = "NAME=DIR", example: str = "support=kb/") -> dict[str, Path]:
    pairs = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise TuneloopError(f"{option} {item!r}: write {form}, e.g. {option} {example}")
        pairs[name] = Path(folder)
    return pairs


def _env_keys(variable: str = "TUNELOOP_API_KEYS") -> list[str] | None:
    keys = [k for k in os.environ.get(variable, "").split(",") if k]
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
    from tuneloop.serve.router_classifier import read_examples, train_router
    from tuneloop.serve.router_config import load_router_config

    report = train_router(load_router_config(router), read_examples(examples) if examples else None, out, seed=seed)
    console.print(f"router classifier -> {out}: accuracy {report['accuracy']:.3f} ({report.get('method', '')})")
    _emit(report, as_json)
