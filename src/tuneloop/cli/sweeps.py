"""`tuneloop sweep`: hyperparameter search over the config's `sweep:` section (tuneloop/sweep/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from tuneloop.artifacts import new_run_dir, read_manifest
from tuneloop.cli.common import Json, Out, _emit, _quiet_libraries
from tuneloop.config import load_config
from tuneloop.errors import TuneloopError
from tuneloop.models.resolve import check_model


def sweep_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML with a sweep: section.")],
    data: Annotated[Path, typer.Option("--data", help="Directory written by `tuneloop data prepare` (its val split scores the trials).")],
    out: Out = None,
    trials: Annotated[int, typer.Option("--trials", help="Trials in all (default: sweep.trials).", min=1, max=10_000)] = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Processes running trials at once, sharing the cores.", min=1, max=64)] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the study in --out: finished trials are kept, an interrupted one reruns.")] = False,
    register: Annotated[bool, typer.Option("--register", help="Evaluate the best trial on the test split and register it.")] = False,
    worker: Annotated[bool, typer.Option("--worker", hidden=True)] = False,
    as_json: Json = False,
) -> None:
    """Search train settings with Optuna (TPE, random or grid), pruning trials on their validation curves.

    Each trial is a train run folder under OUT/trials; the study lives in a database (sweep.storage), so a killed
    sweep continues with --resume and several machines can work on one study."""
    cfg = load_config(config)
    read_manifest(data)
    check_model(cfg.model.name)
    if resume and out is None:
        raise TuneloopError("--resume needs --out: the sweep folder to continue")
    out = out or new_run_dir(Path("runs"), f"{cfg.name}-sweep")
    from tuneloop.sweep.run import finish, open_sweep, work

    _quiet_libraries()
    if worker:  # one of --parallel's processes: trials only
        work(open_sweep(config, data, out, trials, resume=True))
        return
    sweep = open_sweep(config, data, out, trials, resume)
    if parallel > 1:
        cores = len(os.sched_getaffinity(0))
        env = {**os.environ, "TUNELOOP_THREADS": str(max(1, cores // parallel))}
        command = [sys.executable, "-m", "tuneloop.cli", "sweep", str(config), "--data", str(data), "--out", str(out), "--worker",
                   *(["--trials", str(trials)] if trials else [])]
        workers = [subprocess.Popen(command, env=env) for _ in range(parallel)]
        failed = [w.returncode for w in workers if w.wait() != 0]
        if failed:
            raise TuneloopError(f"sweep: {len(failed)} of {parallel} worker processes failed (exit {failed}); --resume continues")
    else:
        work(sweep)
    _emit(finish(sweep, register), as_json)
