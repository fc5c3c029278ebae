"""The study in its database: created on the first run, continued with --resume, shared by processes or machines
that open the same storage.

A sweep killed during a trial leaves that trial RUNNING in the database. `--resume` re-queues it: a trial that this
machine ran under a process that no longer exists is marked failed and its parameters are queued again, so the next
trial retrains them (continuing from the checkpoints its folder holds) and the finished trials are kept. Trials
another machine runs are left alone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tuneloop.config import SweepConfig
from tuneloop.db import default_url
from tuneloop.errors import TuneloopError


def storage_url(sweep: SweepConfig, registry_url: str | None) -> str:
    """sweep.storage, else sweeps.db beside the registry's sqlite file (or under TUNELOOP_HOME)."""
    if sweep.storage:
        return sweep.storage
    registry = registry_url or default_url()
    if not registry.startswith("sqlite:///"):
        raise TuneloopError("sweep.storage: the registry is not a sqlite file, so give the study a database URL of its own "
                            "(Optuna's schema cannot share the registry's database)")
    return f"sqlite:///{Path(registry.removeprefix('sqlite:///')).with_name('sweeps.db')}"


def open_study(sweep: SweepConfig, name: str, url: str, direction: str, resume: bool, default: dict | None = None):
    """The study `name` at `url`, created (with `default`, the config's own settings, queued as its first trial) or,
    with `resume`, continued."""
    from tuneloop.extras import require

    require("sweep", "tuneloop sweep")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 30}} if url.startswith("sqlite") else {})
    exists = name in {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if exists and not resume:
        raise TuneloopError(f"sweep: study '{name}' already exists in {url}: --resume to continue it, or name a new one (sweep.name)")
    if resume and not exists:
        raise TuneloopError(f"sweep --resume: no study '{name}' in {url} to continue")
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=_sampler(sweep),
                                pruner=_pruner(sweep), load_if_exists=True)
    if exists and study.direction.name.lower() != direction:
        raise TuneloopError(f"sweep: study '{name}' was created to {study.direction.name.lower()}; this config asks to {direction}")
    if resume:
        requeue_interrupted(study)
    elif default and sweep.sampler != "grid":  # a grid tries every combination anyway
        study.enqueue_trial(default, user_attrs={"default": True})
    return study


def own(trial) -> None:
    """Mark the trial as run by this process on this machine (what --resume checks)."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def requeue_interrupted(study) -> list[int]:
    """Trials RUNNING under a dead process of this machine: failed, and their parameters queued again."""
    from optuna.trial import TrialState

    requeued = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = trial.user_attrs
        if attrs.get("host") != socket.gethostname() or _alive(attrs.get("pid")):
            continue
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "folder_of": attrs.get("folder_of", trial.number),
                                                      **({"default": True} if attrs.get("default") else {})})
        requeued.append(trial.number)
    return requeued


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sampler(sweep: SweepConfig):
    import optuna

    from tuneloop.sweep.space import grid

    if sweep.sampler == "grid":
        return optuna.samplers.GridSampler(grid(sweep.space), seed=sweep.seed)
    if sweep.sampler == "random":
        return optuna.samplers.RandomSampler(seed=sweep.seed)
    return optuna.samplers.TPESampler(seed=sweep.seed, n_startup_trials=max(sweep.startup_trials, 1))


def _pruner(sweep: SweepConfig):
    import optuna

    if sweep.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=sweep.startup_trials, n_warmup_steps=0, interval_steps=1)
