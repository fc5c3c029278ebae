"""What to ask the teacher: a deterministic list of requests, each with a stable key, so a resumed run
knows which are done.

- paraphrase: rewrites of one seed's input; each keeps the seed's answer (the request names its seed, and
  `prepare` rejects the rewrites when that seed lands in the val or test split).
- balance: new inputs with their answers for one label, shown `shots` seeds as examples; labels get rows
  in inverse proportion to their count among the seeds, until the mix is as even as the budget allows.
- answer: an unlabeled input, asked exactly as the fine-tuned model will be (system prompt, output schema).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field

from tuneloop.config import SynthConfig, TaskConfig
from tuneloop.data.synth.seeds import Seed

SYSTEM = "You write training data for a fine-tuned assistant. Reply with JSON only, in the shape asked for."


@dataclass
class Request:
    key: str
    kind: str  # paraphrase | balance | answer
    messages: list[dict]
    schema: dict | None
    n: int  # rows asked for
    seed: Seed | None = None  # paraphrase: the seed whose answer the rewrites keep
    label: str | None = None
    where: str | None = None  # answer: the unlabeled input's file:line
    input: str | None = None  # answer: the unlabeled input
    shots: list[str] = field(default_factory=list)  # balance: file:line of the seeds shown
    references: list[str] = field(default_factory=list)  # inputs a new row must stay close to (the seed, or the shots)


def plan(seeds: list[Seed], unlabeled: list[tuple[str, str]], cfg: SynthConfig, task: TaskConfig) -> tuple[list[Request], list[str]]:
    """(requests, notes saying what could not be planned and why)."""
    notes: list[str] = []
    n_para = round(cfg.rows * cfg.paraphrase)
    labelled = [s for s in seeds if s.label is not None]
    if cfg.rows - n_para and not (task.label_fields and labelled):
        notes.append("no label field (task.label_fields) or no labelled seed: every requested row is a paraphrase")
        n_para = cfg.rows
    requests = _paraphrases(seeds, n_para, cfg, task) if seeds else []
    if not seeds and cfg.rows:
        notes.append("no usable seed rows: only unlabeled inputs are answered")
    if labelled and cfg.rows - n_para:
        requests += _balance(labelled, cfg.rows - n_para, cfg, task)
    requests += [_answer(where, text, task) for where, text in unlabeled]
    return requests, notes


def _paraphrases(seeds: list[Seed], total: int, cfg: SynthConfig, task: TaskConfig) -> list[Request]:
    requests = []
    for i, seed in enumerate(seeds):
        wanted = total // len(seeds) + (i < total % len(seeds))
        for part, n in enumerate(_chunks(wanted, cfg.per_request)):
            prompt = (f"{_task_line(task)}Here is an input the assistant receives:\n<input>\n{seed.input}\n</input>\n\n"
                      f"Write {n} different rewrites of this input. Vary the wording, length and tone; keep every fact "
                      "that decides the answer; do not copy its sentences. "
                      f'Reply as JSON: {{"inputs": [{n} strings]}}.')
            schema = {"type": "object", "additionalProperties": False, "required": ["inputs"],
                      "properties": {"inputs": {"type": "array", "minItems": n, "maxItems": n, "items": {"type": "string", "minLength": 1, "maxLength": cfg.max_chars}}}}
            requests.append(Request(f"paraphrase:{seed.key[:16]}:{part}", "paraphrase", _messages(prompt), schema, n, seed=seed,
                                    references=[seed.input]))
    return requests


def _balance(seeds: list[Seed], total: int, cfg: SynthConfig, task: TaskConfig) -> list[Request]:
    field_name = task.label_fields[0]
    by_label: dict[str, list[Seed]] = {}
    for seed in seeds:
        by_label.setdefault(seed.label, []).append(seed)
    extra = _even_out(Counter({label: len(group) for label, group in by_label.items()}), total)
    requests = []
    for label in sorted(extra):
        for part, n in enumerate(_chunks(extra[label], cfg.per_request)):
            key = f"balance:{label}:{part}"
            rng = random.Random(f"{cfg.seed}:{key}")
            shots = rng.sample(by_label[label], min(cfg.shots, len(by_label[label])))
            examples = "\n\n".join(f"Input: {s.input}\nAnswer: {s.answer}" for s in shots)
            prompt = (f"{_task_line(task)}Examples of inputs and the expected answers:\n\n{examples}\n\n"
                      f"Write {n} new, realistic inputs whose answer has {field_name} = {json.dumps(label)}, each different "
                      "from the examples and from each other, each with its answer in the same format. "
                      f'Reply as JSON: {{"examples": [{{"input": ..., "answer": ...}}, ...]}} with {n} items.')
            item = {"type": "object", "additionalProperties": False, "required": ["input", "answer"],
                    "properties": {"input": {"type": "string", "minLength": 1, "maxLength": cfg.max_chars},
                                   "answer": _answer_schema(task, label)}}
            schema = {"type": "object", "additionalProperties": False, "required": ["examples"],
                      "properties": {"examples": {"type": "array", "minItems": n, "maxItems": n, "items": item}}}
            requests.append(Request(key, "balance", _messages(prompt), schema, n, label=label, shots=[s.where for s in shots],
                                    references=[s.input for s in shots]))
    return requests


def _answer(where: str, text: str, task: TaskConfig) -> Request:
    messages = ([{"role": "system", "content": task.system_prompt}] if task.system_prompt else []) + [{"role": "user", "content": text}]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    return Request(f"answer:{digest}", "answer", messages, task.output_schema, 1, where=where, input=text)


def _answer_schema(task: TaskConfig, label: str) -> dict:
    if not task.output_schema:
        return {"type": "string", "minLength": 1}
    schema = copy.deepcopy(task.output_schema)
    schema.setdefault("properties", {})[task.label_fields[0]] = {"enum": [label]}
    return schema


def _even_out(counts: Counter, total: int) -> dict[str, int]:
    """Rows to add per label so the smallest counts rise first (water-filling); sums to `total`."""
    extra = Counter({label: 0 for label in counts})
    for _ in range(total):
        label = min(counts, key=lambda name: (counts[name] + extra[name], name))
        extra[label] += 1
    return {label: n for label, n in extra.items() if n}


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - start) for start in range(0, total, size)]


def _task_line(task: TaskConfig) -> str:
    return f"The assistant's instructions: {task.system_prompt}\n\n" if task.system_prompt else ""


def _messages(prompt: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
