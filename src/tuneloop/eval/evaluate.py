"""`tuneloop eval`: score each system on the test split with the same prompts and decoding.

Reads top to bottom: load the test split -> load the base model once (with the adapter attached,
switched off for the base system) -> generate and score per system -> check the objective's gates
-> write results.json, samples.jsonl, metrics.png and manifest.json.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from tuneloop.artifacts import read_jsonl, write_json, write_jsonl, write_manifest
from tuneloop.config import EvalConfig, ModelConfig, ObjectiveConfig, TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.eval.generate import generate
from tuneloop.eval.metrics import aggregate, score
from tuneloop.eval.plots import plot_metrics
from tuneloop.models import is_full_model, load_model, load_tokenizer, render_prompt


def evaluate(
    cfg: EvalConfig, model_cfg: ModelConfig, task: TaskConfig, objective: ObjectiveConfig,
    data_dir: Path, adapter: Path | None, out: Path,
) -> dict:
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(data_dir / "test.jsonl")[: cfg.limit]
    if not rows:
        raise TuneloopError(f"{data_dir / 'test.jsonl'}: the test split is empty; nothing to evaluate")
    systems = [s for s in cfg.systems if s != "finetuned" or adapter is not None]
    if not systems:
        raise TuneloopError("no system to evaluate: 'finetuned' needs a trained adapter (--model RUN_DIR)")

    tokenizer = load_tokenizer(model_cfg.name)
    attached = "finetuned" in systems and not is_full_model(adapter)
    model = load_model(model_cfg.name, adapter=adapter if attached else None)
    # A full fine-tune has no adapter to switch off: the base system is the base model, loaded beside it.
    models = {s: load_model(adapter) if s == "finetuned" and not attached else model for s in systems}
    # Chat rows end with the reference answer; preference rows hold it as the chosen answer.
    conversations = [row["messages"][:-1] if "messages" in row else row["prompt"] for row in rows]
    references = [row["messages"][-1]["content"] if "messages" in row else row["chosen"][-1]["content"] for row in rows]
    prompts = [render_prompt(tokenizer, messages) for messages in conversations]

    results: dict[str, dict[str, float]] = {}
    samples = [{"prompt": messages, "reference": ref, "outputs": {}, "scores": {}} for messages, ref in zip(conversations, references)]
    for system in systems:
        # The base system is the same loaded model with its adapter switched off.
        with model.disable_adapter() if system == "base" and attached else nullcontext():
            answers = generate(models[system], tokenizer, prompts, cfg.max_new_tokens, cfg.batch_size, label=f"eval {system}")
        per_sample = [score(answer, ref, task) for answer, ref in zip(answers, references)]
        for sample, answer, scores in zip(samples, answers, per_sample):
            sample["outputs"][system], sample["scores"][system] = answer, scores
        results[system] = aggregate(per_sample)

    gated = "finetuned" if "finetuned" in results else systems[0]
    gates = check_gates(objective, results[gated])
    summary = {
        "systems": results, "gated_system": gated, "gates": gates,
        "objective_passed": all(g["passed"] for g in gates), "n_test": len(rows),
    }
    write_json(out / "results.json", summary)
    write_jsonl(out / "samples.jsonl", samples)
    plot_metrics(results, objective, out / "metrics.png")
    write_manifest(
        out, "eval", cfg, inputs={"test": data_dir / "test.jsonl", **({"adapter": adapter} if adapter else {})},
        outputs=[out / "results.json", out / "samples.jsonl", out / "metrics.png"], started=started,
        parent=adapter.parent if adapter else data_dir, extra={"model": model_cfg.model_dump(), "summary": summary},
    )
    return summary


def check_gates(objective: ObjectiveConfig, metrics: dict[str, float]) -> list[dict]:
    gates = []
    for metric, gate in objective.gates.items():
        if metric not in metrics:
            raise TuneloopError(f"objective.gates.{metric}: no such metric (measured: {', '.join(sorted(metrics))})")
        value = metrics[metric]
        gates.append({"metric": metric, "gate": str(gate), "value": value, "passed": gate.passes(value), "margin": value - gate.value})
    return gates

