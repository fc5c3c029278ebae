"""The HTTP process, wired: serve's OpenAI-compatible routes, the fine-tuning jobs API and its worker, the
registry, the request log, knowledge bases and the web dashboard, assembled from command-line options.

This is a composition above the stages: the one module that hands the registry to serving and the data
stage and registry to the jobs worker, so that none of those stages imports another.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from tuneloop.access import Access
from tuneloop.artifacts import read_manifest
from tuneloop.config import DataConfig, ModelConfig, MonitorConfig, TaskConfig
from tuneloop.dashboard import Sources, dashboard_router
from tuneloop.db import Database
from tuneloop.db.requestlog import RequestStore
from tuneloop.errors import TuneloopError
from tuneloop.jobs.api import jobs_router
from tuneloop.jobs.store import JobStore
from tuneloop.jobs.worker import Worker
from tuneloop.layout import PipelineDir, TrainDir
from tuneloop.models.provenance import loadable_base
from tuneloop.providers.remote import is_remote
from tuneloop.registry.lineage import register_run
from tuneloop.registry.store import Registry
from tuneloop.serve.app import create_app
from tuneloop.serve.catalog import Catalog
from tuneloop.serve.engine import Engine
from tuneloop.serve.handler import Limits
from tuneloop.serve.ab_routes import Routes
from tuneloop.serve.telemetry import RequestLog
from tuneloop.serve.vllm_settings import VllmSettings


@dataclass
class ServeOptions:
    models: list[str] = field(default_factory=list)  # registry refs or run/adapter folders to load at start
    base: str | None = None
    registry: str | None = None  # SQLAlchemy URL
    routes: Path | None = None
    api_keys: list[str] | None = None
    read_keys: list[str] | None = None  # may look (GET) at the API and the dashboard, change nothing
    runs: Path = Path("runs")  # the runs folder the dashboard shows
    dashboard: bool = True  # the web dashboard at /ui
    monitor: MonitorConfig = field(default_factory=MonitorConfig)  # alert rules and drift settings the dashboard uses
    request_log: str = "registry"  # "registry", "off", or a .jsonl path
    max_batch: int = 16
    max_queue: int = 64
    max_adapters: int = 8
    prefix_cache_mb: int = 256  # keys and values of recent prompts kept for reuse (our engine; vLLM has its own)
    limits: Limits = field(default_factory=Limits)
    router: Path | None = None  # YAML: a model name that picks one of several models by the request's content
    knowledge: dict[str, Path] = field(default_factory=dict)  # served name -> knowledge base dir (`tuneloop rag index`)
    knowledge_k: int = 3  # chunks put into each prompt
    aliases: dict[str, str] = field(default_factory=dict)  # served name -> registry ref or run folder it stands for
    jobs: bool = True  # the fine-tuning jobs API (and, with run_jobs, a worker that runs the jobs)
    run_jobs: bool = True  # off: serve the jobs API but leave running the jobs to another server on the same database
    launcher: str | None = None  # e.g. "accelerate launch --num_processes 4" for multi-GPU jobs
    engine: str = "tuneloop"  # or "vllm": tokens from vLLM child processes, everything else stays here
    vllm: VllmSettings = field(default_factory=VllmSettings)


def build_app(options: ServeOptions) -> tuple[FastAPI, Catalog]:
    database = Database(options.registry)
    registry, requests = Registry(database), RequestStore(database)
    folders = {_folder_name(Path(m)): Path(m) for m in options.models if Path(m).is_dir()}
    jobs = JobStore(database) if options.jobs else None
    catalog = Catalog(
        options.base or _base_of(options.models, registry) or ModelConfig().name, registry=registry,
        routes=Routes.load(options.routes) if options.routes else Routes(), folders=folders, jobs=jobs,
        router=_router(options.router), knowledge=_knowledge(options.knowledge), knowledge_k=options.knowledge_k,
        engine_options={"max_batch": options.max_batch, "max_queue": options.max_queue, "max_adapters": options.max_adapters},
        engine_factory=_engine_factory(options), aliases=options.aliases,
    )
    for name in [*folders, *(m for m in options.models if not Path(m).is_dir()), *options.aliases]:
        target = catalog.resolve(name)  # fails early on a name that does not resolve
        if target.adapter:
            target.engine.load_adapter(target.adapter)
    sink = None if options.request_log == "off" else (
        RequestLog(store=requests) if options.request_log == "registry" else RequestLog(path=Path(options.request_log)))
    stages = JobStages(registry)
    access = Access(write_keys=list(options.api_keys or []), read_keys=list(options.read_keys or []))
    routers = [jobs_router(jobs, stages)] if jobs is not None else []
    if options.dashboard:
        routers.append(dashboard_router(Sources(registry=registry, requests=requests, runs_root=options.runs, access=access,
                                                jobs=jobs, catalog=catalog, monitor=options.monitor,
                                                runs_jobs=jobs is not None and options.run_jobs)))
    background = [Worker(jobs, stages, launcher=options.launcher)] if jobs is not None and options.run_jobs else []
    app = create_app(catalog, access=access, limits=options.limits, request_log=sink, feedback=requests,
                     routers=routers, background=background)
    app.state.on_hard_stop = [lambda: [e.kill() for e in catalog.engines.values() if hasattr(e, "kill")]]
    return app, catalog


class JobStages:
    """What fine-tuning jobs need from the other stages (jobs.stages.Stages): the data stage and the registry."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def check_file(self, path: Path) -> str | None:
        from tuneloop.data.file_check import check_file

        return check_file(path)

    def prepare(self, inputs: list[Path], out: Path, data: DataConfig, model: ModelConfig) -> None:
        from tuneloop.data.prepare import prepare

        prepare(inputs, out, data, TaskConfig(), model)

    def register(self, name: str, train_dir: Path, note: str) -> dict[str, Any]:
        return register_run(self.registry, name, train_dir, note=note)


def _engine_factory(options: ServeOptions):
    if options.engine == "tuneloop":
        return functools.partial(Engine, prefix_cache_mb=options.prefix_cache_mb)
    if options.engine != "vllm":
        raise TuneloopError(f"--engine {options.engine!r}: choose tuneloop (the default) or vllm")
    from tuneloop.serve.vllm import VllmEngine

    return functools.partial(VllmEngine, settings=options.vllm)


def _router(path: Path | None):
    if path is None:
        return None
    from tuneloop.serve.router import Router

    return Router.load(path)


def _knowledge(bases: dict[str, Path]) -> dict:
    if not bases:
        return {}
    from tuneloop.rag.index import KnowledgeBase

    return {name: KnowledgeBase.load(Path(folder)) for name, folder in bases.items()}


def _base_of(models: list[str], registry) -> str | None:
    """The base the first local model (not a hosted fine-tune) was trained on."""
    for ref in models:
        if Path(ref).is_dir():
            try:
                if not is_remote(Path(ref)):
                    return loadable_base(read_manifest(Path(ref))["model"])
            except Exception:
                pass
            continue
        version = registry.resolve(ref)
        if version["method"] != "remote":
            return version["base_model"]
    return None


def _folder_name(path: Path) -> str:
    """A served folder's name: a pipeline run's, for its train folder or that folder's weights."""
    path = path.resolve()
    inner = {PipelineDir(path.parent).train.root, TrainDir(path.parent).adapter, TrainDir(path.parent).model}
    return path.parent.name if path in inner else path.name
