"""`tuneloop sweep CONFIG --data DIR`: Optuna trials over the config's `sweep.space`, each an ordinary train run.

read the config and its sweep section -> check the objective names a number validation measures -> open (or
resume) the study -> for each trial: suggest the parameters, write the trial's config, train into
trials/trial-NNNN, report every evaluation to the pruner -> the table, sweep.json and plots -> with --register,
the best trial evaluated on the test split and registered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneloop.artifacts import write_json
from tuneloop.config import PipelineConfig, load_config, parse_config
from tuneloop.errors import TuneloopError
from tuneloop.layout import DataDir, SweepDir
from tuneloop.sweep.report import cell, table, write_plots, write_summary
from tuneloop.sweep.space import defaults, suggest, trial_config
from tuneloop.sweep.study import open_study, own, storage_url
from tuneloop.ui import console


@dataclass
class Sweep:
    config: Path
    data_dir: Path
    cfg: PipelineConfig
    raw: dict
    key: str
    study: object
    folders: SweepDir
    total: int
    meta: dict


def run_sweep(config: Path, data_dir: Path, out: Path, trials: int | None = None, resume: bool = False, register: bool = False) -> dict:
    """The whole sweep in this process."""
    sweep = open_sweep(config, data_dir, out, trials, resume)
    work(sweep)
    return finish(sweep, register)


def open_sweep(config: Path, data_dir: Path, out: Path, trials: int | None, resume: bool) -> Sweep:
    cfg = load_config(config)
    if cfg.sweep is None:
        raise TuneloopError(f"{config}: no sweep: section (sweep.space names the train settings to vary)")
    raw = yaml.safe_load(config.read_text()) or {}
    key, direction = objective_of(cfg)
    check_objective(key, data_dir)
    if cfg.sweep.pruner != "none" and not cfg.train.eval_every:
        raise TuneloopError(f"{config}: sweep.pruner: {cfg.sweep.pruner} reads each trial's validation curve: set "
                            f"train.eval_every > 0 (or sweep.pruner: none)")
    name = cfg.sweep.name or f"{cfg.name}-sweep"
    url = storage_url(cfg.sweep, cfg.registry.url)
    default = defaults(cfg.train.model_dump(), cfg.sweep.space) if cfg.sweep.include_default else None
    if cfg.sweep.include_default and default is None and not resume:
        console.print("[yellow]sweep:[/] the config's own train settings lie outside sweep.space, so no trial runs them as they are")
    study = open_study(cfg.sweep, name, url, direction, resume, default)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"study": name, "storage": url, "objective": key, "direction": direction, "config": str(config), "data": str(data_dir)}
    return Sweep(config, data_dir, cfg, raw, key, study, SweepDir(out), trials or cfg.sweep.trials, meta)


def work(sweep: Sweep) -> None:
    """Run trials until the study has `total` finished ones (complete or pruned), by this process or others."""
    import optuna
    from optuna.trial import TrialState

    counted = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = sweep.total - len(sweep.study.get_trials(deepcopy=False, states=counted))
    console.print(f"sweep [bold]{sweep.meta['study']}[/]: {sweep.total} trials ({max(remaining, 0)} to run) of "
                  f"{', '.join(sweep.cfg.sweep.space)}, {sweep.meta['direction']} {sweep.key} on the validation split; "
                  f"study in {sweep.meta['storage']}")
    if remaining > 0:
        sweep.study.optimize(lambda trial: _trial(trial, sweep), n_trials=remaining, catch=(TuneloopError,),
                             callbacks=[optuna.study.MaxTrialsCallback(sweep.total, states=counted),
                                        lambda study, trial: write_summary(study, sweep.folders, sweep.meta)])


def finish(sweep: Sweep, register: bool = False) -> dict:
    """The table, sweep.json and plots; with `register`, the best trial evaluated on the test split and registered."""
    summary = write_summary(sweep.study, sweep.folders, sweep.meta)
    summary["plots"] = write_plots(sweep.study, sweep.folders)
    console.print(table(summary))
    best = summary["best"]
    if best is None:
        raise TuneloopError(f"sweep {sweep.meta['study']}: no trial finished; see the trial folders under {sweep.folders.trials}")
    console.print(f"best: trial {best['trial']} {sweep.key} {best['objective']:.4f} with {best['params']} -> {best['folder']}")
    if register:
        summary["registered"] = _register(sweep, best)
    write_json(sweep.folders.summary, summary)
    return summary


def objective_of(cfg: PipelineConfig) -> tuple[str, str]:
    """(the record key a trial is scored by, minimize or maximize)."""
    train = cfg.train.model_copy(update={"select_by": cfg.sweep.objective}) if cfg.sweep.objective else cfg.train
    key, mode = train.selection
    return key, "minimize" if mode == "min" else "maximize"


def check_objective(key: str, data_dir: Path) -> None:
    """The objective must be a number validation measures: val_loss, or a task metric of the prepared task."""
    if key in ("val_loss", "val_reward"):
        return
    from tuneloop.artifacts import read_jsonl
    from tuneloop.metrics import Context, mean_scores, score_corpus, score_samples
    from tuneloop.models.chat import last_text
    from tuneloop.train.prompts import task_of

    val = DataDir(data_dir).val
    rows = read_jsonl(val) if val.is_file() else []
    if not rows:
        raise TuneloopError(f"sweep.objective: {key.removeprefix('val_')} is scored on the validation split, and {val} has no rows")
    references = [last_text(r.get("messages") or r.get("chosen") or [], "assistant") for r in rows[:8]]
    ctx = Context(task_of(data_dir))
    names = {*mean_scores(score_samples(references, references, ctx)), *score_corpus(references, references, ctx)}
    if key.removeprefix("val_") not in names:
        known = ", ".join(sorted(n for n in names if ".f1." not in n))
        raise TuneloopError(f"sweep.objective: '{key.removeprefix('val_')}' is not a metric of this task (val_loss, or one of: {known})")


def _trial(trial, run: Sweep) -> float:
    import optuna

    from tuneloop.train.trainer import train

    sweep, key, folders, config = run.cfg.sweep, run.key, run.folders, run.config
    own(trial)
    params = suggest(trial, sweep.space)
    number = trial.user_attrs.get("folder_of", trial.number)  # a retry trains on in the interrupted trial's folder
    trial.set_user_attr("folder_of", number)
    folder = folders.trial(number)
    shown = ", ".join(f"{k.removeprefix('train.')}={cell(v)}" for k, v in params.items())
    console.rule(f"[bold]trial {trial.number}[/] (of {run.total}): {shown}")
    cfg = parse_config(trial_config(run.raw, params, sweep), source=f"{config} (trial {trial.number}: {shown})", base_dir=config.parent)
    evaluations = 0

    def report(record: dict) -> None:
        nonlocal evaluations
        if key not in record:
            return
        evaluations += 1
        trial.report(record[key], record["step"])
        if evaluations > sweep.warmup_evaluations and trial.should_prune():
            console.print(f"[yellow]trial {trial.number} pruned[/] at step {record['step']}: {key} {record[key]:.4f}")
            raise optuna.TrialPruned(f"{key} {record[key]:.4f} at step {record['step']}")

    started = time.time()
    summary = train(cfg.train, cfg.model, run.data_dir, folder.root, resume="retry_of" in trial.user_attrs, criteria=cfg.objective,
                    on_eval=report, tags={"study": trial.study.study_name, "trial": trial.number, "params": params})
    trial.set_user_attr("wall_s", round(time.time() - started, 1))
    if summary.get("best_selection") is None:
        raise TuneloopError(f"trial {trial.number}: no {key} was measured (is there a validation split?)")
    return float(summary["best_selection"])


def _register(run: Sweep, best: dict) -> dict:
    """The best trial evaluated on the test split, as `tuneloop run` does, and registered with that evaluation."""
    from tuneloop.eval.evaluate import evaluate
    from tuneloop.models import trained_weights
    from tuneloop.registry.lineage import register_run
    from tuneloop.registry.store import Registry
    from tuneloop.train.tracking import log_evaluation, log_registration

    cfg = parse_config(trial_config(run.raw, best["params"], run.cfg.sweep), source=str(run.config), base_dir=run.config.parent)
    train_dir, eval_dir = Path(best["folder"]), run.folders.eval.root
    console.rule(f"[bold]best trial {best['trial']} on the test split")
    log_evaluation(train_dir, evaluate(cfg.eval, cfg.model, cfg.task, cfg.objective, run.data_dir, trained_weights(train_dir), eval_dir))
    version = register_run(Registry(cfg.registry.url), cfg.registry.name, train_dir, eval_dir,
                           note=f"sweep {run.meta['study']} trial {best['trial']}: {best['params']}")
    log_registration(train_dir, version)
    console.print(f"registered [bold]{version['ref']}[/]")
    return version
