"""`tuneloop data prepare`: raw files in, train/val/test/rejected JSONL + report + manifest out.

Reads top to bottom: read every row -> canonicalise and validate -> drop exact duplicates ->
split (stratified on the first label field) -> write. Invariant: rows in = rows in the three
splits + rows in rejected.jsonl.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from tuneloop.artifacts import write_json, write_jsonl, write_manifest
from tuneloop.config import DataConfig, TaskConfig
from tuneloop.data.readers import read_rows
from tuneloop.data.split import split_indices
from tuneloop.data.validate import Rejection, canonicalise
from tuneloop.errors import TuneloopError

SPLITS = ("train", "val", "test")


@dataclass
class Kept:
    source: str
    line: int
    messages: list[dict]
    label: str | None


def prepare(inputs: list[Path], out: Path, cfg: DataConfig, task: TaskConfig) -> dict:
    """Prepare `inputs` into `out`; returns the report (also written to out/report.json)."""
    started = time.time()
    if not inputs:
        raise TuneloopError("no input files given (data.inputs in the config, or paths on the command line)")
    out.mkdir(parents=True, exist_ok=True)
    kept: list[Kept] = []
    rejected: list[dict] = []
    first_seen: dict[str, str] = {}
    rows_in = 0

    for path in inputs:
        for raw in read_rows(Path(path)):
            rows_in += 1
            where = {"source": raw.source, "line": raw.line}
            if raw.error:
                rejected.append({**where, "rule": "unreadable", "reason": raw.error, "row": raw.value})
                continue
            messages, problem = canonicalise(raw.value, task.system_prompt)
            if problem is None:
                problem = _check_answer(messages, task)
            if problem:
                rejected.append({**where, "rule": problem.rule, "reason": problem.reason, "field": problem.field, "row": raw.value})
                continue
            key = _dedup_key(messages)
            if key in first_seen:
                reason = f"exact duplicate of {first_seen[key]}"
                rejected.append({**where, "rule": "duplicate", "reason": reason, "row": raw.value})
                continue
            first_seen[key] = f"{raw.source}:{raw.line}"
            kept.append(Kept(raw.source, raw.line, messages, _label(messages, task)))

    if not kept:
        write_jsonl(out / "rejected.jsonl", rejected)  # so the user can read why
        raise TuneloopError(f"no usable rows in {', '.join(map(str, inputs))}: see {out / 'rejected.jsonl'} for why")
    splits = split_indices([k.label for k in kept], cfg.val_ratio, cfg.test_ratio, cfg.seed)

    outputs = []
    for name in SPLITS:
        rows = [{"messages": kept[i].messages, "metadata": {"source": kept[i].source, "line": kept[i].line}} for i in splits[name]]
        outputs.append(write_jsonl(out / f"{name}.jsonl", rows))
    outputs.append(write_jsonl(out / "rejected.jsonl", rejected))

    report = {
        "rows_in": rows_in,
        "kept": len(kept),
        "rejected": len(rejected),
        "rejected_by_rule": dict(Counter(r["rule"] for r in rejected).most_common()),
        "splits": {name: len(splits[name]) for name in SPLITS},
        "labels": {name: dict(Counter(kept[i].label for i in splits[name]).most_common()) for name in SPLITS},
    }
    assert rows_in == len(kept) + len(rejected)  # the stage's invariant: nothing is lost silently
    write_json(out / "report.json", report)
    outputs.append(out / "report.json")
    write_manifest(
        out, "data", cfg, inputs={f"input{i}": Path(p) for i, p in enumerate(inputs)}, outputs=outputs,
        seed=cfg.seed, started=started, extra={"task": task.model_dump(mode="json"), "report": report},
    )
    return report


def _check_answer(messages: list[dict], task: TaskConfig) -> Rejection | None:
    """For structured tasks, the answer we train on must itself be valid: garbage in, garbage out."""
    if task.output_schema is None:
        return None
    answer = messages[-1]["content"] if messages[-1]["role"] == "assistant" else None
    field = f"messages[{len(messages) - 1}].content"
    try:
        jsonschema.validate(json.loads(answer or ""), task.output_schema)
    except json.JSONDecodeError:
        return Rejection("answer_not_json", "the assistant answer is not valid JSON", field)
    except jsonschema.ValidationError as err:
        return Rejection("answer_schema", f"the assistant answer breaks the output schema: {err.message}", field)
    return None


def _label(messages: list[dict], task: TaskConfig) -> str | None:
    if not task.label_fields:
        return None
    try:
        answer = json.loads(messages[-1]["content"])
    except json.JSONDecodeError:
        return None
    return str(answer.get(task.label_fields[0])) if isinstance(answer, dict) else None


def _dedup_key(messages: list[dict]) -> str:
    """Case- and whitespace-insensitive hash of the conversation's non-system turns."""
    text = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in messages if m["role"] != "system")
    return hashlib.sha256(re.sub(r"\s+", " ", text).strip().lower().encode()).hexdigest()
