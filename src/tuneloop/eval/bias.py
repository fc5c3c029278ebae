"""The counterfactual bias probe of `tuneloop eval` (eval.bias): does the answer change when only a name, a
gendered word or a nationality in the input changes?

Every input holding a listed term (counterfactual.py) gets up to `max_variants` variants per attribute with
the term(s) swapped; each probed system answers all of them in one batched call through eval's own
generation path (same framing, greedy). A variant *flips* when a label field of its answer differs from the
original input's answer (tasks with task.label_fields); otherwise when the answer text differs after
normalisation, with the swapped terms mapped back first (greeting "John" instead of "Maria" is no flip).
Per attribute: inputs probed, variants, flips, the flip rate with a 95% bootstrap interval over inputs
(a ratio: flips / variants of the resampled inputs), and examples. bias.flip_rate and
bias.<attribute>.flip_rate join the system's metrics, where the objective's gates read them.
"""

from __future__ import annotations

import difflib
import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from tuneloop.artifacts import read_jsonl
from tuneloop.config import BiasConfig, ObjectiveConfig, TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.eval.baselines import split_row
from tuneloop.eval.counterfactual import SHIPPED, Attribute, load_terms
from tuneloop.eval.scoring import gated_system
from tuneloop.metrics.labels import field_labels

# (system, conversations, the test row each comes from or None) -> the system's answers, in order.
AnswerRows = Callable[[str, list[list[dict]], list[int | None]], list[str]]


def probed_systems(cfg: BiasConfig | None, objective: ObjectiveConfig, systems: list[str]) -> list[str]:
    """The systems to probe, checked before anything is generated: a gate on bias metrics of a system that
    is not probed (or with the probe off) fails now, not after the whole evaluation."""
    gated = gated_system(systems)
    named = {key: _gate_systems(key, gated) for key in objective.gates if key.strip().startswith("bias.")}
    if cfg is None:
        if named:
            raise TuneloopError(f"objective.gates.{next(iter(named))}: the bias probe is off; "
                                "set eval.bias (`bias: {}` for its defaults)")
        return []
    wanted = cfg.systems or [gated]
    missing = [s for s in wanted if s not in systems]
    if missing:
        raise TuneloopError(f"eval.bias.systems: {', '.join(missing)} not evaluated (evaluated: {', '.join(systems)})")
    for key, needed in named.items():
        if set(needed) - set(wanted):
            raise TuneloopError(f"objective.gates.{key}: {', '.join(sorted(set(needed) - set(wanted)))} is not probed "
                                f"(eval.bias.systems: {', '.join(wanted)})")
    return wanted


def _gate_systems(key: str, gated: str) -> list[str]:
    if ":" in key:
        return [part.strip() for part in key.split(":", 1)[1].split("-")]
    return [key.partition("@")[2].strip() or gated]


def bias_probe(cfg: BiasConfig, systems: list[str], conversations: list[list[dict]], outputs: dict[str, list[str]],
          task: TaskConfig, answer: AnswerRows, resamples: int, seed: int) -> dict:
    """The probe's report section; `outputs`: each system's answers to `conversations` (the test split)."""
    started = time.time()
    attributes = load_terms(cfg.terms)
    extra = _extra_inputs(cfg.inputs, task) if cfg.inputs else []
    probes = []
    for origin, conversation in [*enumerate(conversations), *((None, c) for c in extra)]:
        texts = _user_texts(conversation)
        swaps = {a.name: a.swaps(texts, cfg.max_variants) for a in attributes}
        if any(swaps.values()):
            probes.append({"origin": origin, "conversation": conversation, "swaps": {k: v for k, v in swaps.items() if v}})
    probes = probes[: cfg.limit]
    by_name = {a.name: a for a in attributes}
    # One batch per system: the originals that eval did not answer already (eval.bias.inputs), then every variant.
    jobs = [(k, None, None, p["conversation"]) for k, p in enumerate(probes) if p["origin"] is None]
    jobs += [(k, name, mapping, _swapped(p["conversation"], by_name[name], mapping))
             for k, p in enumerate(probes) for name, mappings in p["swaps"].items() for mapping in mappings]
    section = {"terms": str(cfg.terms or SHIPPED), "inputs": len(conversations) + len(extra), "from_file": len(extra),
               "probed": len(probes), "variants": sum(1 for j in jobs if j[1] is not None), "systems": {}}
    for system in systems:
        answers = answer(system, [j[3] for j in jobs], [probes[j[0]]["origin"] for j in jobs]) if jobs else []
        originals = [outputs[system][p["origin"]] if p["origin"] is not None else "" for p in probes]
        for (k, name, _, _), text in zip(jobs, answers):
            if name is None:
                originals[k] = text
        answered = [(k, by_name[name], mapping, conversation, text)
                    for (k, name, mapping, conversation), text in zip(jobs, answers) if name is not None]
        section["systems"][system] = _tally(answered, probes, originals, attributes, task, cfg.examples, resamples, seed)
    section["wall_s"] = round(time.time() - started, 1)
    return section


def add_bias_metrics(scored: dict, section: dict) -> None:
    """bias.flip_rate and bias.<attribute>.flip_rate (nan: nothing probed) into the scored systems, with intervals."""
    for system, entry in section["systems"].items():
        rows = {"bias.flip_rate": entry, **{f"bias.{name}.flip_rate": a for name, a in entry["attributes"].items()}}
        for metric, row in rows.items():
            scored["systems"][system][metric] = math.nan if row["flip_rate"] is None else row["flip_rate"]
            if row["interval"] is not None:
                scored["intervals"].setdefault(system, {})[metric] = row["interval"]


def _tally(answered: list, probes: list[dict], originals: list[str], attributes: list[Attribute], task: TaskConfig,
           n_examples: int, resamples: int, seed: int) -> dict:
    n = len(probes)
    variants = {a.name: np.zeros(n) for a in attributes}
    flips = {a.name: np.zeros(n) for a in attributes}
    similarity: dict[str, list[float]] = {a.name: [] for a in attributes}
    examples: dict[str, list[dict]] = {a.name: [] for a in attributes}
    for k, attribute, mapping, conversation, text in answered:
        back = attribute.inverse(mapping)
        flipped, ratio = _compare(originals[k], attribute.swap(text, back), task)
        variants[attribute.name][k] += 1
        flips[attribute.name][k] += flipped
        similarity[attribute.name].append(ratio)
        if flipped and len(examples[attribute.name]) < n_examples:
            examples[attribute.name].append({
                "swapped": ", ".join(f"{attribute.groups[attribute.where[t][0]][attribute.where[t][1]]} -> {r}" for t, r in mapping.items()),
                "input": _user_texts(probes[k]["conversation"])[-1], "variant": _user_texts(conversation)[-1],
                "answer": originals[k], "variant_answer": text})
    total_v, total_f = sum(variants.values()), sum(flips.values())
    entry = _rates(total_v, total_f, resamples, seed)
    entry["attributes"] = {a.name: {**_rates(variants[a.name], flips[a.name], resamples, seed),
                                    "answer_similarity": float(np.mean(similarity[a.name])) if similarity[a.name] else None}
                           for a in attributes}
    entry["examples"] = {name: rows for name, rows in examples.items() if rows}
    return entry


def _rates(variants: np.ndarray, flips: np.ndarray, resamples: int, seed: int) -> dict:
    """Counts and the flip rate over the inputs that have variants, with a bootstrap interval over those inputs."""
    probed = variants > 0
    v, f = variants[probed], flips[probed]
    rate, interval = None, None
    if v.size:
        rate = float(f.sum() / v.sum())
        draws = np.random.default_rng(seed).integers(0, v.size, size=(resamples, v.size))
        interval = [float(x) for x in np.percentile(f[draws].sum(axis=1) / v[draws].sum(axis=1), [2.5, 97.5])]
    return {"inputs": int(v.size), "variants": int(v.sum()), "flips": int(f.sum()), "inputs_flipped": int((f > 0).sum()),
            "flip_rate": rate, "interval": interval}


def _compare(original: str, variant: str, task: TaskConfig) -> tuple[bool, float]:
    """(flipped, similarity of the normalised answers); `variant` already has the swapped terms mapped back."""
    a, b = (" ".join(text.lower().split()) for text in (original, variant))
    if task.label_fields:
        flipped = any(field_labels([original], f) != field_labels([variant], f) for f in task.label_fields)
    else:
        flipped = a != b
    return flipped, difflib.SequenceMatcher(None, a, b).ratio()


def _user_texts(conversation: list[dict]) -> list[str]:
    return [m["content"] for m in conversation if m.get("role") == "user" and isinstance(m.get("content"), str)]


def _swapped(conversation: list[dict], attribute: Attribute, mapping: dict[str, str]) -> list[dict]:
    """The conversation with the terms swapped in its user turns (the system prompt is the task's, left alone)."""
    return [{**m, "content": attribute.swap(m["content"], mapping)} if m.get("role") == "user" and isinstance(m.get("content"), str)
            else m for m in conversation]


def _extra_inputs(path: Path, task: TaskConfig) -> list[list[dict]]:
    """eval.bias.inputs as conversations: chat rows (the answer, if any, dropped), prompt/completion or preference rows, with the
    task's system prompt where a row has none, as training and the test split have it."""
    if not path.is_file():
        raise TuneloopError(f"{path}: file not found (eval.bias.inputs)")
    conversations = []
    for line, row in enumerate(read_jsonl(path), 1):
        messages = row.get("messages") if isinstance(row, dict) else None
        if isinstance(messages, list) and messages and messages[-1].get("role") == "user":
            conversation = [dict(m) for m in messages]
        elif isinstance(row, dict) and isinstance(row.get("prompt"), str):  # prompt/completion rows
            conversation = [{"role": "user", "content": row["prompt"]}]
        elif isinstance(row, dict) and ("messages" in row or "prompt" in row):
            conversation = split_row(row)[0]
        else:
            raise TuneloopError(f"{path}:{line}: a bias input is a chat row (`messages`), a prompt/completion or a preference row (`prompt`)")
        if task.system_prompt and not any(m.get("role") == "system" for m in conversation):
            conversation.insert(0, {"role": "system", "content": task.system_prompt})
        conversations.append(conversation)
    return conversations
