"""`tuneloop eval`: the fine-tuned model against the base model, a prompt-engineered baseline and a RAG
baseline, on the protected test split, with the same decoding for all.

Reads top to bottom: load the test split -> load the model once (adapter attached, switched off for
the baselines; a full fine-tune loads beside the base) -> frame the inputs per system and generate
-> score (metrics, 95% bootstrap intervals, paired differences) -> counterfactual bias probe (eval.bias)
-> gates -> edge cases -> general-capability regression (perplexity, local lm-eval task) -> write
results.json, samples.jsonl, report.html with plots, manifest.json.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from tuneloop.artifacts import read_jsonl, write_json, write_jsonl, write_manifest
from tuneloop.config import EvalConfig, ExternalSystem, ModelConfig, ObjectiveConfig, TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.eval.baselines import conversations_for, split_row
from tuneloop.eval.bias import add_bias_metrics, bias_probe, probed_systems
from tuneloop.eval.external import External
from tuneloop.eval.generate import generate
from tuneloop.eval.regression import general_capability, switch_for
from tuneloop.eval.report import write_report
from tuneloop.eval.scoring import check_gates, score_systems
from tuneloop.extras import require
from tuneloop.layout import DataDir, EvalDir, TrainDir
from tuneloop.models import is_full_model, load_model, load_tokenizer, render_prompt
from tuneloop.providers.remote import is_remote


def evaluate(
    cfg: EvalConfig, model_cfg: ModelConfig, task: TaskConfig, objective: ObjectiveConfig,
    data_dir: Path, adapter: Path | None, out: Path,
) -> dict:
    started = time.time()
    if cfg.regression:
        require("regression", "eval.regression (the lm-eval multiple-choice check)", instead="set eval.regression: false")
    if cfg.rag_index:
        require("rag", "eval.rag_index (a knowledge base)")
    out.mkdir(parents=True, exist_ok=True)
    data, folder = DataDir(data_dir), EvalDir(out)
    rows = read_jsonl(data.test)[: cfg.limit]
    if not rows:
        raise TuneloopError(f"{data.test}: the test split is empty; nothing to evaluate")
    # Systems answered elsewhere: the configured external ones, and a hosted fine-tune given as --model.
    externals = {s.name: External(s, cfg, folder) for s in cfg.external}
    if is_remote(adapter):
        if "constrained" in cfg.system_names:
            raise TuneloopError(f"{adapter} is a hosted fine-tune: 'constrained' decodes locally under a grammar; remove it")
        externals["finetuned"] = External(ExternalSystem.model_construct(name="finetuned", run=adapter), cfg, folder)
        remote_run, adapter = adapter, None
    else:
        remote_run = None
    systems = [s for s in cfg.system_names if s in externals or s not in ("finetuned", "constrained") or adapter is not None]
    if not systems:
        raise TuneloopError("no system to evaluate: 'finetuned' needs a trained model (--model RUN_DIR)")
    probed = probed_systems(cfg.bias, objective, systems)
    tools = [row.get("tools") for row in rows]
    grammars = grammars_for(task, tools) if "constrained" in systems else None
    framings = {name: external.system.framed_as for name, external in externals.items()}
    train_rows = read_jsonl(data.train) if {"prompted", "rag"} & {*systems, *framings.values()} and data.train.is_file() else []

    # --- models: one load; baselines run with the adapter switched off ---------------------------
    local = [s for s in systems if s not in externals]
    tokenizer = load_tokenizer(model_cfg.name) if local else None
    trained = {"finetuned", "constrained"} & set(local)
    attached = bool(trained) and not is_full_model(adapter)
    model = load_model(model_cfg.name, adapter=adapter if attached else None) if local else None
    tuned = load_model(adapter) if trained and not attached else model

    def frame(system: str, conversations: list[list[dict]], hits: list | None = None) -> list[list[dict]]:
        return conversations_for(framings.get(system, system), conversations, train_rows, task, cfg, hits)

    def answer(conversations_per_system: dict[str, list[list[dict]]], tag: str, row_tools: list | None = None,
               row_grammars: list | None = None, originals: list[list[dict]] | None = None) -> dict[str, list[str]]:
        outputs = {}
        for system, conversations in conversations_per_system.items():
            if system in externals:
                outputs[system] = externals[system].answer(conversations, originals or conversations, tag)
                continue
            prompts = [render_prompt(tokenizer, c, row_tools[i] if row_tools else None) for i, c in enumerate(conversations)]
            with model.disable_adapter() if system not in trained and attached else nullcontext():
                outputs[system] = generate(tuned if system in trained else model, tokenizer, prompts, cfg.max_new_tokens,
                                           cfg.batch_size, label=f"{tag} {system}",
                                           grammars=row_grammars if system == "constrained" else None)
        return outputs

    # --- test split ----------------------------------------------------------------------------------
    conversations, references = zip(*(split_row(r) for r in rows))
    passages = None
    if cfg.rag_index:  # the rag system answers from a knowledge base
        from tuneloop.eval.retrieval import load_knowledge, retrieval_summary, retrieve

        knowledge = load_knowledge(cfg.rag_index)
        passages = retrieve(knowledge, [c[-1]["content"] for c in conversations], cfg.rag_k)
    framed = {s: frame(s, list(conversations), passages) for s in systems}
    outputs = answer(framed, "eval", tools, grammars, list(conversations))
    scored = score_systems(outputs, list(references), task, cfg.bootstrap, cfg.seed, tools)

    def answer_rows(system: str, rows: list[list[dict]], origins: list[int | None]) -> list[str]:
        """The bias probe's conversations, framed like the test row each comes from (None: eval.bias.inputs)."""
        hits = None
        if passages is not None:  # a variant keeps its original's passages; an extra input retrieves its own
            fresh = iter(retrieve(knowledge, [c[-1]["content"] for c, i in zip(rows, origins) if i is None], cfg.rag_k)
                         if None in origins else [])
            hits = [passages[i] if i is not None else next(fresh) for i in origins]
        row_tools = [tools[i] if i is not None else None for i in origins]
        return answer({system: frame(system, rows, hits)}, "bias", row_tools,
                      grammars_for(task, row_tools) if system == "constrained" else None, rows)[system]

    bias = bias_probe(cfg.bias, probed, list(conversations), outputs, task, answer_rows, cfg.bootstrap, cfg.seed) if probed else None
    if bias:
        add_bias_metrics(scored, bias)
    gates = check_gates(objective, scored["systems"], scored["gated_system"])
    compared = {s: tuned if s == "finetuned" else model for s in local if s in ("base", "finetuned")}  # regression's models
    summary = {
        "n_test": len(rows), **{k: v for k, v in scored.items() if k != "per_sample"}, "gates": gates,
        "objective_passed": all(g["passed"] for g in gates), "bias": bias,
        "edge_cases": _edge_cases(cfg, systems, task, frame, answer) if cfg.edge_cases else None,
        "retrieval": retrieval_summary(passages, rows, outputs, cfg.rag_k) if passages is not None else None,
        "regression": general_capability(compared, tokenizer, switch_for(attached, model)) if cfg.regression and compared else None,
        "costs": {name: external.cost() for name, external in externals.items() if name in systems} or None,
    }
    samples = [
        {"prompt": list(conversations[i]), "reference": references[i], "outputs": {s: outputs[s][i] for s in systems},
         "scores": {s: scored["per_sample"][s][i] for s in systems}}
        for i in range(len(rows))
    ]

    # --- save ------------------------------------------------------------------------------------------
    write_json(folder.results, summary)
    write_jsonl(folder.samples, samples)
    written = write_report(summary, samples, out)
    write_manifest(
        out, "eval", cfg, inputs={"test": data.test, **({"model": adapter} if adapter else {}),
                                  **({"model": TrainDir(remote_run).remote} if remote_run else {})},
        outputs=[folder.results, folder.samples, *written], started=started,
        parent=adapter.parent if adapter else remote_run or data_dir, extra={"model": model_cfg.model_dump(), "summary": summary},
    )
    return summary


def grammars_for(task: TaskConfig, tools: list[list[dict] | None]) -> list[str | None]:
    """The `constrained` system's grammar per test row: its tools' calls (free text allowed, calls valid), else
    the task's output schema."""
    from tuneloop.grammar import json_grammar, tool_grammar
    from tuneloop.models.tools import functions

    if task.output_schema is None and not any(tools):
        raise TuneloopError("eval.systems has 'constrained', which decodes under task.output_schema or the rows' tools; "
                            "this task has neither: set task.output_schema or remove 'constrained'")
    return [tool_grammar(functions(t), required=False, parallel=True) if t
            else json_grammar(task.output_schema) if task.output_schema is not None else None for t in tools]


def _edge_cases(cfg: EvalConfig, systems: list[str], task: TaskConfig, frame, answer) -> dict:
    """The configured edge/adversarial file, scored on its own: never mixed into the test metrics."""
    if not cfg.edge_cases.is_file():
        raise TuneloopError(f"{cfg.edge_cases}: edge-case file not found (eval.edge_cases)")
    rows = read_jsonl(cfg.edge_cases)
    conversations, references = zip(*(split_row(r) for r in rows))
    tools = [row.get("tools") for row in rows]
    grammars = grammars_for(task, tools) if "constrained" in systems else None
    outputs = answer({s: frame(s, list(conversations)) for s in systems}, "edge", tools, grammars, list(conversations))
    scored = score_systems(outputs, list(references), task, cfg.bootstrap, cfg.seed)
    return {"n": len(rows), "file": str(cfg.edge_cases), "systems": scored["systems"],
            "outputs": [{"input": c[-1]["content"], **{s: outputs[s][i] for s in outputs}} for i, c in enumerate(conversations)]}
