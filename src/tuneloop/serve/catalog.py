"""What a request's `model` names, resolved to an engine and an adapter.

Names, in the order they are tried:
- a route (A/B split): one of its variants is picked, then resolved as below;
- the base model's name: the base without adapters;
- a folder given to `tuneloop serve --model`, by its name;
- a model made by a fine-tuning job (`ft:BASE:SUFFIX:JOBID`, or a checkpoint `...:ckpt-step-N`);
- a registry reference: `name:3`, `name@production`, or a bare `name` (its `production` alias when it
  has one, else its latest version). Aliases are looked up per request, so moving or rolling back an
  alias takes effect at once, without a restart.
A served alias (`--alias NAME=REF`) is replaced by what it stands for before the lookup. A hosted fine-tune
(a version of kind remote, or its train folder) resolves to no engine: the provider answers (serve/remote.py).

Adapters of one base share that base's engine; a fully fine-tuned model gets an engine of its own.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tuneloop.artifacts import read_manifest
from tuneloop.errors import TuneloopError
from tuneloop.models import is_full_model, resolve_model, weights_folder
from tuneloop.models.provenance import adapter_base, loadable_base
from tuneloop.providers.remote import RemoteModel, is_remote, remote_model
from tuneloop.serve.engine import Engine
from tuneloop.serve.generation import AdapterRef
from tuneloop.serve.ab_routes import Routes


class ModelNotFound(TuneloopError):
    pass


class Versions(Protocol):
    """The registry, as serving reads it (tuneloop.registry.Registry is one; the server process passes it in)."""

    def resolve(self, ref: str) -> dict[str, Any]: ...

    def models(self) -> list[dict[str, Any]]: ...

    def aliases(self, name: str | None = None) -> list[dict[str, Any]]: ...


class JobModels(Protocol):
    """Models made by fine-tuning jobs (tuneloop.jobs.store.JobStore is one): `ft:...` names."""

    def model_for(self, name: str) -> str | Path | None: ...

    def model_names(self) -> list[str]: ...


@dataclass
class Target:
    requested: str
    variant: str | None  # the route variant chosen for this request, when `requested` is a route
    version: str | None  # registry name:version, or the folder name
    engine: Engine | None  # None for a hosted model (remote): the provider answers
    adapter: AdapterRef | None
    system_prompt: str | None
    remote: RemoteModel | None = None


class Catalog:
    def __init__(self, base: str, *, registry: Versions | None = None, routes: Routes | None = None,
                 folders: dict[str, Path] | None = None, jobs: JobModels | None = None, router=None, knowledge: dict[str, Any] | None = None, knowledge_k: int = 3,
                 engine_options: dict[str, Any] | None = None, engine_factory=Engine, aliases: dict[str, str] | None = None):
        self.base, self.registry, self.routes, self.jobs = base, registry, routes or Routes(), jobs
        self.router = router  # serve.router.Router: a model name that picks a route by the request's content
        self.knowledge, self.knowledge_k = dict(knowledge or {}), knowledge_k  # served name -> rag.KnowledgeBase
        self.folders = dict(folders or {})
        # Served names that stand for another model (`--alias OLD=REF`): e.g. a hosted fine-tune's `ft:...` name kept
        # for the open model that replaced it, so clients change only their base_url. A run folder is served under
        # its folder's name, like one given to --model; a registry reference is looked up per request.
        self.aliases = {}
        for alias, ref in (aliases or {}).items():
            if Path(ref).is_dir():
                key = Path(ref).name if self.folders.get(Path(ref).name, Path(ref)) == Path(ref) else ref
                self.folders[key], ref = Path(ref), key
            self.aliases[alias] = ref
        self.engine_options = engine_options or {}
        self.engine_factory = engine_factory  # Engine (ours), or serve.vllm.VllmEngine: what makes the tokens
        self.engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.engine_for(base)

    def engine_for(self, ref: str | Path) -> Engine:
        key = str(resolve_model(ref))
        with self._lock:
            if key not in self.engines:
                self.engines[key] = self.engine_factory(ref, **self.engine_options)
            return self.engines[key]

    def resolve(self, requested: str, user: str | None = None) -> Target:
        variant = self.routes.pick(requested, user) if requested in self.routes else None
        name = variant or requested
        name = self.aliases.get(name, name)
        if name == self.base:
            return Target(requested, variant, None, self.engine_for(self.base), None, None)
        if name in self.folders:
            return self._target(requested, variant, name, self.folders[name], _system_prompt(self.folders[name]))
        made = self.jobs.model_for(name) if self.jobs is not None and name.startswith("ft:") else None
        if isinstance(made, Path):  # a job's checkpoint
            return self._target(requested, variant, name, made, None)
        if made is not None:  # a finished job's model, registered with lineage to the job
            name = made
        if self.registry is None:
            raise ModelNotFound(f"model '{name}' is not served here (served: {', '.join(self.listing())})")
        try:
            version = self.registry.resolve(self._default_alias(name))
        except TuneloopError as err:
            raise ModelNotFound(f"model '{name}': {err}") from None
        artifact = Path(version["artifact_path"])
        return self._target(requested, variant, version["ref"], artifact, (version.get("task") or {}).get("system_prompt"),
                            base=version["base_model"])

    def knowledge_for(self, target: Target):
        """The knowledge base attached to the name the client asked for, or to the version's model name."""
        for name in filter(None, (target.requested, target.variant, target.version)):
            for key in (name, name.split("@")[0].split(":")[0]):
                if key in self.knowledge:
                    return self.knowledge[key]
        return None

    def listing(self) -> list[str]:
        names = {self.base, *self.folders, *self.aliases, *self.routes.names(), *(self.jobs.model_names() if self.jobs is not None else []),
                 *([self.router.name] if self.router is not None else [])}
        if self.registry is not None:
            names |= {m["name"] for m in self.registry.models()}
            names |= {f"{a['name']}@{a['alias']}" for a in self.registry.aliases()}
        return sorted(names)

    def close(self, timeout: float | None = None) -> None:
        """Stop every engine: queued requests finish, or are cancelled once `timeout` seconds have passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for engine in list(self.engines.values()):
            engine.stop(None if deadline is None else max(deadline - time.monotonic(), 0.0))

    def _default_alias(self, name: str) -> str:
        if ":" in name or "@" in name:
            return name
        has_production = any(a["alias"] == "production" for a in self.registry.aliases(name))
        return f"{name}@production" if has_production else name

    def _target(self, requested, variant, version, artifact: Path, system_prompt, base: str | None = None) -> Target:
        if is_remote(artifact):
            return Target(requested, variant, version, None, None, system_prompt, remote=remote_model(artifact))
        weights = weights_folder(artifact)
        if is_full_model(weights):
            return Target(requested, variant, version, self.engine_for(weights), None, system_prompt)
        base = base or _manifest_base(artifact) or self.base
        if str(resolve_model(base)) != str(resolve_model(self.base)):
            raise ModelNotFound(f"model '{version}' is an adapter for base '{base}', but this server's base is '{self.base}'; "
                                f"start a server with --base {base}")
        config = json.loads((weights / "adapter_config.json").read_text())
        adapter = AdapterRef(version, str(weights), dora=bool(config.get("use_dora")), experts=bool(config.get("target_parameters")))
        return Target(requested, variant, version, self.engine_for(self.base), adapter, system_prompt)


def _manifest_base(artifact: Path) -> str | None:
    """The base a run's manifest names, or (for an adapter folder that travelled alone) the adapter's own."""
    try:
        return loadable_base(read_manifest(artifact)["model"])
    except TuneloopError:
        return adapter_base(artifact)


def _system_prompt(run_dir: Path) -> str | None:
    try:
        return (read_manifest(run_dir).get("task") or {}).get("system_prompt")
    except TuneloopError:
        return None
