"""`tuneloop run`: chain the stages through their artifacts on disk.

prepare data -> train -> evaluate (fine-tuned vs base on the test split) -> register. This module
only chains stage entry points; each stage reads the previous stage's directory, never its objects.
"""

from __future__ import annotations

import time
from pathlib import Path

from tuneloop.config import PipelineConfig
from tuneloop.data.prepare import prepare
from tuneloop.errors import TuneloopError
from tuneloop.eval.evaluate import evaluate
from tuneloop.eval.table import metrics_table
from tuneloop.layout import PipelineDir
from tuneloop.models import resolve_model, trained_weights
from tuneloop.registry.lineage import register_run
from tuneloop.registry.store import Registry
from tuneloop.train.trainer import train
from tuneloop.ui import console


def run_pipeline(cfg: PipelineConfig, run_dir: Path) -> dict:
    started = time.time()
    # Fail on a bad model reference or a missing input now, not after minutes of earlier stages.
    resolve_model(cfg.model.name)
    for path in cfg.data.inputs:
        if not path.is_file():
            raise TuneloopError(f"{path}: input file not found (data.inputs)")
    folders = PipelineDir(run_dir)
    data_dir, train_dir, eval_dir = folders.data.root, folders.train.root, folders.eval.root

    console.rule("[bold]1/4 data")
    report = prepare(cfg.data.inputs, data_dir, cfg.data, cfg.task, cfg.model)
    console.print(
        f"{report['rows_in']} rows in: {report['splits']['train']} train, {report['splits']['val']} val, "
        f"{report['splits']['test']} test; {report['rejected']} rejected {report['rejected_by_rule']}; "
        f"PII redacted {report['pii_redacted']} -> {folders.data.report_html}"
    )

    console.rule("[bold]2/4 train")
    summary = train(cfg.train, cfg.model, data_dir, train_dir)
    console.print(f"loss {summary['first_loss']:.3f} -> {summary['final_loss']:.3f} (val {summary['val_loss']}) -> {folders.train.loss_plot}")

    console.rule("[bold]3/4 evaluate")
    results = evaluate(cfg.eval, cfg.model, cfg.task, cfg.objective, data_dir, trained_weights(train_dir), eval_dir)
    console.print(metrics_table(results))

    console.rule("[bold]4/4 register")
    registry = Registry(cfg.registry.url)
    version = register_run(registry, cfg.registry.name, train_dir, eval_dir)
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
    }


def serve_hint(model_ref: str) -> str:
    return (
        f"serve it:   tuneloop serve --model {model_ref} --port 8000\n"
        f"then:       curl -s localhost:8000/v1/chat/completions -H 'Content-Type: application/json' "
        f"-d '{{\"model\": \"{model_ref}\", \"messages\": [{{\"role\": \"user\", \"content\": \"My parcel never arrived, order #A12345\"}}]}}'\n"
        f"or python:  OpenAI(base_url='http://127.0.0.1:8000/v1', api_key='none').chat.completions.create("
        f"model='{model_ref}', messages=[{{'role': 'user', 'content': '...'}}])"
    )
