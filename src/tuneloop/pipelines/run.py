"""`tuneloop run`: chain the stages through their artifacts on disk.

prepare data -> train -> [a GRPO round on the SFT model: `rl:`] -> evaluate (fine-tuned vs base on the
test split) -> register. This module only chains stage entry points; each stage reads the previous
stage's directory, never its objects.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

from tuneloop.artifacts import read_manifest
from tuneloop.config import ModelConfig, PipelineConfig
from tuneloop.data.prepare import prepare
from tuneloop.data.readers import is_dataset_folder
from tuneloop.errors import TuneloopError
from tuneloop.eval.evaluate import evaluate
from tuneloop.eval.table import metrics_table
from tuneloop.layout import PipelineDir
from tuneloop.models import resolve_model, trained_weights
from tuneloop.pipelines.rl_round import grpo_round
from tuneloop.registry.lineage import register_run
from tuneloop.registry.store import Registry
from tuneloop.train.tracking import log_evaluation, log_registration
from tuneloop.train.trainer import train
from tuneloop.ui import console


def run_pipeline(cfg: PipelineConfig, run_dir: Path, resume: bool = False) -> dict:
    """Every stage into `run_dir`. `resume`: a stage whose folder is complete (its manifest written) is reused,
    and training continues from its last checkpoint, so a killed run picks up where it stopped."""
    started = time.time()
    # Fail on a bad model reference or a missing input now, not after minutes of earlier stages.
    resolve_model(cfg.model.name)
    for path in cfg.data.inputs:
        if not path.is_file() and not is_dataset_folder(path):
            raise TuneloopError(f"{path}: input file not found (data.inputs)")
    folders = PipelineDir(run_dir)
    data_dir, train_dir, eval_dir = folders.data.root, folders.train.root, folders.eval.root

    console.rule("[bold]1/4 data")
    report = _finished(data_dir, "data", "report") if resume else None
    if report is None:
        report = prepare(cfg.data.inputs, data_dir, cfg.data, cfg.task, cfg.model)
    console.print(
        f"{report['rows_in']} rows in: {report['splits']['train']} train, {report['splits']['val']} val, "
        f"{report['splits']['test']} test; {report['rejected']} rejected {report['rejected_by_rule']}; "
        f"PII redacted {report['pii_redacted']} -> {folders.data.report_html}"
    )

    console.rule("[bold]2/4 train")
    summary = _finished(train_dir, "train", "summary") if resume else None
    if summary is None:
        summary = train(cfg.train, cfg.model, data_dir, train_dir, resume=resume, criteria=cfg.objective)
    console.print(f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f} (val {summary['val_loss']}) -> {folders.train.loss_plot}")
    model, weights_dir = cfg.model, train_dir
    if cfg.rl is not None:
        console.rule("[bold]2/4 train: a GRPO round on the SFT model")
        if resume and _finished(folders.train_rl.root, "train", "summary") is not None:
            model, weights_dir = ModelConfig(name=str(folders.sft_export.model.resolve())), folders.train_rl.root
        else:
            model, weights_dir = grpo_round(cfg, train_dir, data_dir, folders, resume=resume)

    console.rule("[bold]3/4 evaluate" + (" (base: the SFT model; finetuned: SFT + GRPO)" if cfg.rl is not None else ""))
    results = _finished(eval_dir, "eval", "summary") if resume else None
    if results is None:
        results = evaluate(cfg.eval, model, cfg.task, cfg.objective, data_dir, trained_weights(weights_dir), eval_dir)
        log_evaluation(weights_dir, results)  # into the train run's MLflow / W&B runs, where train.tracking has them
    console.print(metrics_table(results))

    console.rule("[bold]4/4 register")
    registry = Registry(cfg.registry.url)
    version = _registered(registry, cfg.registry.name, weights_dir) if resume else None
    if version is None:
        version = register_run(registry, cfg.registry.name, weights_dir, eval_dir)
        log_registration(weights_dir, version)
    console.print(f"registered [bold]{version['ref']}[/] (registry {registry.url})")

    return {
        "base": results["systems"].get("base", {}),
        "finetuned": results["systems"].get("finetuned", {}),
        "systems": results["systems"],
        "regression": results.get("regression"),
        "gates": results["gates"],
        "objective_passed": results["objective_passed"],
        "model": version["ref"],
        "wall_s": round(time.time() - started, 1),
        "run_dir": str(run_dir.resolve()),
        "stages_s": {stage: _wall(folder) for stage, folder in (("data", data_dir), ("train", train_dir), ("eval", eval_dir))},
    }


def _finished(folder: Path, stage: str, key: str) -> dict | None:
    """What a complete stage folder recorded (`key` of its manifest), or None when the stage must run."""
    try:
        manifest = read_manifest(folder)
    except TuneloopError:
        return None
    if manifest.get("stage") != stage or key not in manifest:
        return None
    console.print(f"{stage}: finished earlier in {folder}, reused")
    return manifest[key]


def _registered(registry: Registry, name: str, train_dir: Path) -> dict | None:
    mine = str(train_dir.resolve())
    return next((v for v in reversed(registry.versions(name)) if v["artifact_path"] == mine), None)


def _wall(folder: Path) -> float | None:
    try:
        return read_manifest(folder).get("wall_s")
    except TuneloopError:
        return None


def next_steps(result: dict) -> str:
    """Where everything is, and what to run next: the end of `tuneloop run` and `tuneloop demo`."""
    folders, cli = PipelineDir(Path(result["run_dir"])), command()
    ref = result["model"]
    fine, gates = result.get("finetuned") or {}, result.get("gates") or []
    lines = ["", f"model {ref}: " + ", ".join(f"{g['metric']} {g['value']:.3f} ({'pass' if g['passed'] else 'FAIL'} {g['gate']})" for g in gates)
             if gates else f"model {ref}: " + ", ".join(f"{k} {v:.3f}" for k, v in list(fine.items())[:4])]
    lines += ["", "results:",
              f"  evaluation report  {folders.eval.report_html}",
              f"  training curve     {folders.train.loss_plot}",
              f"  data report        {folders.data.report_html}"]
    if folders.monitor.report_html.is_file():
        lines.append(f"  monitoring report  {folders.monitor.report_html}")
    lines += ["", "next:",
              f"  serve it        {cli} serve --model {ref} --port 8000",
              "  ask it          curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' "
              f"-d '{{\"model\": \"{ref}\", \"messages\": [{{\"role\": \"user\", \"content\": \"My parcel never arrived\"}}]}}'",
              f"  or in Python    OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='none').chat.completions.create(model='{ref}', ...)",
              f"  see it all      {cli} ui --runs {folders.root.parent}   (then open http://127.0.0.1:8000/ui)",
              f"  blind A/B       {cli} eval ab-export {folders.eval.root}",
              f"  your own data   {cli} init my-project && {cli} run my-project/pipeline.yaml"]
    return "\n".join(lines)


def command() -> str:
    """How to call tuneloop from here: `tuneloop` when it is on PATH, else the script this process runs."""
    script = Path(sys.argv[0])
    on_path = shutil.which("tuneloop")
    if script.name != "tuneloop" or (on_path and Path(on_path).resolve() == script.resolve()):
        return "tuneloop"
    try:
        return str(script.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(script)
