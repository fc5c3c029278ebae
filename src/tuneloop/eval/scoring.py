"""Score every system's answers: per-sample and corpus metrics, bootstrap intervals, paired differences,
label confusion matrices; and the objective's gates over them."""

from __future__ import annotations

import numpy as np

from tuneloop.config import ObjectiveConfig, TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.metrics import Context, mean_scores, score_corpus, score_samples
from tuneloop.metrics.labels import confusion_tables
from tuneloop.eval.stats import paired_bootstrap


def score_systems(outputs: dict[str, list[str]], references: list[str], task: TaskConfig, resamples: int, seed: int,
                  tools: list[list[dict] | None] | None = None) -> dict:
    ctx = Context(task, tools if tools and any(tools) else None)
    per_sample = {s: score_samples(answers, references, ctx) for s, answers in outputs.items()}
    systems = {s: {**mean_scores(per_sample[s]), **score_corpus(answers, references, ctx)} for s, answers in outputs.items()}

    def corpus(system: str, indices: np.ndarray) -> dict[str, float]:
        return score_corpus([outputs[system][i] for i in indices], [references[i] for i in indices], ctx)

    gated = gated_system(list(outputs))
    intervals, spreads = paired_bootstrap(per_sample, corpus, gated, resamples=resamples, seed=seed)
    differences = {
        other: {m: {"diff": systems[gated][m] - systems[other][m], "low": low, "high": high} for m, (low, high) in metrics.items()}
        for other, metrics in spreads.items()
    }
    labels = {name: confusion_tables(outputs, references, name) for name in task.label_fields}
    return {"systems": systems, "intervals": intervals, "differences": differences, "labels": labels,
            "gated_system": gated, "per_sample": per_sample}


def gated_system(systems: list[str]) -> str:
    """The system the gates judge by default: the trained one when it was evaluated."""
    return next((s for s in ("finetuned", "constrained") if s in systems), systems[0])


def check_gates(objective: ObjectiveConfig, systems: dict[str, dict[str, float]], gated: str) -> list[dict]:
    """Gate keys: `metric` (the gated system's value), `metric@system`, or `metric: A - B` (a difference)."""
    gates = []
    for key, gate in objective.gates.items():
        value = _gate_value(key, systems, gated)
        gates.append({"metric": key, "gate": str(gate), "value": value, "passed": gate.passes(value), "margin": value - gate.value})
    return gates


def _gate_value(key: str, systems: dict[str, dict[str, float]], gated: str) -> float:
    def lookup(metric: str, system: str) -> float:
        if system not in systems:
            raise TuneloopError(f"objective.gates.{key}: system '{system}' was not evaluated (evaluated: {', '.join(systems)})")
        if metric not in systems[system]:
            raise TuneloopError(f"objective.gates.{key}: no such metric (measured: {', '.join(sorted(systems[system]))})")
        return systems[system][metric]

    if ":" in key:
        metric, expression = (part.strip() for part in key.split(":", 1))
        # System names may hold '-' (gpt-4o): split at the ' - ' with spaces, else at the '-' that leaves two systems.
        cuts = [expression.partition(" - ")] if " - " in expression else \
            [(expression[:i], "-", expression[i + 1:]) for i, c in enumerate(expression) if c == "-"]
        known = [(left, right) for left, _, right in cuts if left.strip() in systems and right.strip() in systems]
        left, right = known[0] if known else (cuts[0][0], cuts[0][2]) if cuts else (None, None)
        if left is None:
            raise TuneloopError(f"objective.gates.{key}: a comparison gate looks like 'metric: finetuned - base'")
        return lookup(metric, left.strip()) - lookup(metric, right.strip())
    metric, _, system = key.partition("@")
    return lookup(metric.strip(), system.strip() or gated)
