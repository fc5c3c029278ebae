"""What a run page shows of each stage, taken from the files the stage wrote (manifest, reports, results)."""

from __future__ import annotations

from typing import Any

from tuneloop.dashboard.runs import Stage, read_json, read_jsonl
from tuneloop.layout import DataDir, EvalDir, MonitorDir

# The eval table's rows: the gated and headline metrics first, then every other per-system number.
HEADLINE = ("json_valid", "schema_valid", "exact_match", "category_accuracy", "priority_accuracy", "f1_macro", "accuracy",
            "bleu", "rougeL", "semantic_similarity", "refusal", "empty", "length_chars")
SAMPLES_PER_PAGE = 10


def lineage(stage: Stage) -> dict[str, Any]:
    manifest = stage.manifest or {}
    inputs = manifest.get("inputs") or {}
    return {
        "created": manifest.get("created"), "wall_s": manifest.get("wall_s"), "seed": manifest.get("seed"),
        "parent": manifest.get("parent"), "model": (manifest.get("model") or {}).get("name"),
        "inputs": [{"name": name, "path": (v or {}).get("path", ""), "sha256": (v or {}).get("sha256", "")}
                   for name, v in (inputs.items() if isinstance(inputs, dict) else [])],
        "libraries": manifest.get("libraries") or {},
    }


def data_view(stage: Stage) -> dict[str, Any]:
    report = read_json(DataDir(stage.path).report) or {}
    rules = sorted((report.get("rejected_by_rule") or {}).items(), key=lambda kv: -kv[1])
    return {"report": report, "rules": rules, "splits": report.get("splits") or {}, "pii": report.get("pii_redacted") or {}}


def train_view(stage: Stage) -> dict[str, Any]:
    manifest = stage.manifest or {}
    config = manifest.get("config") or {}
    return {"summary": manifest.get("summary") or {}, "config": config,
            "settings": {k: config.get(k) for k in ("method", "objective", "max_steps", "epochs", "batch_size", "learning_rate",
                                                   "scheduler", "max_seq_len", "select_by") if k in config}}


def eval_view(stage: Stage, samples_page: int = 1) -> dict[str, Any]:
    folder = EvalDir(stage.path)
    results = read_json(folder.results) or {}
    systems: dict[str, dict] = results.get("systems") or {}
    names = list(systems)
    metrics = [m for m in HEADLINE if any(m in s for s in systems.values())]
    metrics += sorted({m for s in systems.values() for m in s if m not in metrics and "." not in m})
    intervals = results.get("intervals") or {}
    table = [{"metric": m, "cells": [{"value": systems[s].get(m), "interval": (intervals.get(s) or {}).get(m)} for s in names]}
             for m in metrics]
    gated = results.get("gated_system") or "finetuned"
    differences = [{"against": other, "rows": [{"metric": m, **d} for m, d in sorted(diffs.items()) if m in metrics]}
                   for other, diffs in (results.get("differences") or {}).items()]
    start = (max(samples_page, 1) - 1) * SAMPLES_PER_PAGE
    samples, _ = read_jsonl(folder.samples, after=start, limit=SAMPLES_PER_PAGE)
    return {
        "n_test": results.get("n_test"), "systems": names, "table": table, "gated": gated, "differences": differences,
        "gates": results.get("gates") or [], "passed": results.get("objective_passed"),
        "confusions": [f.name for f in sorted(stage.path.glob("confusion_*.png"))],
        "samples": [_sample(s, names) for s in samples], "samples_page": max(samples_page, 1),
        "more_samples": len(samples) == SAMPLES_PER_PAGE,
    }


def monitor_view(stage: Stage) -> dict[str, Any]:
    report = read_json(MonitorDir(stage.path).report) or {}
    summary = report.get("summary") or {}
    return {"summary": summary, "drift": report.get("drift")}


def _sample(sample: dict, systems: list[str]) -> dict[str, Any]:
    prompt = sample.get("prompt", "")
    if isinstance(prompt, list):
        prompt = "\n".join(f"{turn.get('role', '?')}: {turn.get('content', '')}" for turn in prompt
                           if isinstance(turn, dict) and turn.get("role") != "system")
    outputs = sample.get("outputs") or {}
    return {"prompt": str(prompt), "reference": sample.get("reference"), "outputs": [(s, outputs.get(s)) for s in systems]}
