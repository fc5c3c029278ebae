"""`tuneloop import openai-compatible`: move off a hosted fine-tune without changing its clients.

Reads top to bottom: find the job (by id, or by the fine-tuned model it made) -> download its training and
validation files -> prepare them with the data stage, as `tuneloop run` will (same inputs, same seed, so the
same protected test split: the validation file, which the hosted model never trained on, when the job has
one) -> ask the hosted model for its answers to the test split: the golden set ->
write a config that retrains an open base model on the same data with the job's hyperparameters, evaluated
beside the golden answers (system `hosted`) with a parity gate on them (per label field when the answers are JSON with label-like fields, such as a
category, which are then the task's label fields; else exact match or ROUGE-L). Then `tuneloop run CONFIG` trains
and gates it, and `tuneloop serve --alias OLD_NAME=REF` answers under the old model name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from tuneloop.artifacts import read_jsonl, write_json, write_jsonl
from tuneloop.config import DEFAULT_MODEL, parse_config
from tuneloop.data.prepare import prepare
from tuneloop.errors import TuneloopError
from tuneloop.eval.baselines import split_row
from tuneloop.layout import ImportDir
from tuneloop.metrics.structure import parse_object
from tuneloop.providers.chat import answer_all
from tuneloop.providers.client import Client, api_key
from tuneloop.providers.finetune import HostedJobs
from tuneloop.ui import console

SHORT_ANSWER = 40  # characters: answers this short on average are labels, judged by exact match (else ROUGE-L)
MAX_LABELS = 12  # distinct values a JSON field may hold to count as a label field


def import_hosted(base_url: str, out: Path, *, job_id: str | None = None, model: str | None = None, api_key_env: str | None = None,
                  base: str = DEFAULT_MODEL, name: str | None = None, tolerance: float = 0.05, max_tokens: int = 256,
                  concurrency: int = 4, test_ratio: float = 0.1) -> dict:
    if (job_id is None) == (model is None):
        raise TuneloopError("give --job JOB_ID or --model FT_MODEL_NAME (one of them)")
    folder = ImportDir(out)
    with Client(base_url, key=api_key(api_key_env, "tuneloop import")) as client:
        jobs = HostedJobs(client)
        job = jobs.get(job_id) if job_id else jobs.find_model(model)
        if job.get("status") != "succeeded" or not job.get("fine_tuned_model"):
            raise TuneloopError(f"job {job['id']} is {job.get('status')}: only a finished job has a model whose answers can be "
                                "recorded; wait for it, or import another")
        # --- the job's data ---------------------------------------------------------------------
        files = {"train": job["training_file"], "validation": job.get("validation_file")}
        for split, file_id in files.items():
            if file_id and not folder.source(split).is_file():
                folder.source(split).parent.mkdir(parents=True, exist_ok=True)
                folder.source(split).write_bytes(jobs.content(file_id))
        console.print(f"import: job {job['id']} ({job['fine_tuned_model']}): "
                      + ", ".join(f"{split} {len(read_jsonl(folder.source(split)))} rows" for split, f in files.items() if f))
        # --- the config, and the data stage as `tuneloop run` will run it -----------------------------
        registry_name = name or _name(job)
        config = _config(job, folder, base, registry_name, tolerance, test_ratio, base_url, api_key_env)
        cfg = parse_config(config, source=str(folder.config), base_dir=folder.root)
        report = prepare(cfg.data.inputs, folder.data.root, cfg.data, cfg.task, cfg.model)
        # --- the golden set: the hosted model on the protected test split -----------------------------
        conversations = [split_row(row)[0] for row in read_jsonl(folder.data.test)]
        answers, usage = answer_all(client, job["fine_tuned_model"], conversations, max_tokens=max_tokens, concurrency=concurrency,
                                    cache=folder.golden_cache)
    write_jsonl(folder.golden, [{"messages": c, "answer": a} for c, a in zip(conversations, answers)])
    references = [split_row(row)[1] for row in read_jsonl(folder.data.train)]
    labels = label_fields(references)
    if labels:  # JSON answers with a few values per field (a category, a priority): scored per field
        config["task"] = {"label_fields": labels}
    metrics = [f"{name}_accuracy" for name in labels] or [_parity_metric(references)]
    config["objective"]["gates"] = {f"{metric}: finetuned - hosted": f">= {-tolerance:g}" for metric in metrics}
    folder.config.write_text(yaml.safe_dump(config, sort_keys=False))
    record = {"base_url": base_url, "job": job["id"], "fine_tuned_model": job["fine_tuned_model"], "base_model": job.get("model"),
              "hyperparameters": _hyperparameters(job), "files": files, "rows": report["splits"], "golden": len(answers),
              "golden_requests": usage.requests - usage.cached, "parity_gate": config["objective"]["gates"], "registry_name": registry_name}
    write_json(folder.record, record)
    console.print(f"import: {len(answers)} golden answers -> {folder.golden}; config -> {folder.config}")
    console.print(f"next: tuneloop run {folder.config}   then: tuneloop serve --model {registry_name} "
                  f"--alias '{job['fine_tuned_model']}={registry_name}'")
    return {**record, "config": str(folder.config), "out": str(folder.root)}


def _config(job: dict, folder: ImportDir, base: str, registry_name: str, tolerance: float, test_ratio: float,
            base_url: str, api_key_env: str | None) -> dict:
    hp = _hyperparameters(job)
    train = str(folder.source("train").relative_to(folder.root))
    if folder.source("validation").is_file():  # rows the hosted model never trained on: the protected test split
        # The hosted job trained on every training row (its validation file was held out): so does the retrain.
        data = {"inputs": [train], "frozen_test": str(folder.source("validation").relative_to(folder.root)), "val_ratio": 0.0}
    else:
        console.print("[yellow]import: the job has no validation file, so the test split is drawn from its training rows, which "
                      "the hosted model has seen: its golden answers are then an upper bound[/]")
        data = {"inputs": [train], "test_ratio": test_ratio}
    return {
        "name": registry_name,
        "model": {"name": base},
        "data": {**data, "seed": job.get("seed") or 0},
        "train": {"epochs": hp["n_epochs"], "batch_size": hp["batch_size"],
                  "learning_rate": float(f"{1e-3 * hp['learning_rate_multiplier']:.3g}"), "seed": job.get("seed") or 0},
        "eval": {"systems": ["base", "finetuned", {"name": "hosted", "answers": folder.golden.name}]},
        "objective": {"description": f"parity with {job['fine_tuned_model']} (job {job['id']} at {base_url}) within {tolerance:g}",
                      "gates": {}},
        "registry": {"name": registry_name},
    }


def _hyperparameters(job: dict) -> dict:
    """The job's hyperparameters (OpenAI's method section first), "auto" read as OpenAI's defaults."""
    method = job.get("method") or {}
    hp = dict(job.get("hyperparameters") or {})
    hp |= ((method.get(method.get("type") or "supervised") or {}).get("hyperparameters") or {})
    resolved = {"n_epochs": 3, "batch_size": 8, "learning_rate_multiplier": 1.0}
    for key in resolved:
        value = hp.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            resolved[key] = value
    return resolved


def label_fields(answers: list[str], most: int = MAX_LABELS) -> list[str]:
    """The fields of JSON-object answers that hold labels: present in nearly every answer, a string each time, and
    at most `most` distinct values (but more than one) over many more answers than values."""
    objects = [value for value in map(parse_object, answers) if value is not None]
    if not answers or len(objects) < 0.9 * len(answers):
        return []
    fields = []
    for name in dict.fromkeys(k for o in objects for k in o):
        values = [o.get(name) for o in objects]
        distinct = set(v for v in values if isinstance(v, str))
        if sum(isinstance(v, str) for v in values) >= 0.9 * len(objects) and 1 < len(distinct) <= most \
                and len(objects) >= 4 * len(distinct):
            fields.append(name)
    return fields


def _parity_metric(references: list[str]) -> str:
    """exact_match for labels and JSON answers, ROUGE-L for prose."""
    def structured(text: str) -> bool:
        try:
            return isinstance(json.loads(text), (dict, list))
        except ValueError:
            return False
    if references and (all(structured(r) for r in references) or sum(map(len, references)) / len(references) <= SHORT_ANSWER):
        return "exact_match"
    return "rougeL"


def _name(job: dict) -> str:
    suffix = "".join(c if c.isalnum() or c in "._-" else "-" for c in (job.get("user_provided_suffix") or job.get("suffix") or ""))
    return (suffix.strip("-._") or "migrated")[:48] + "-open"
