"""What the teacher is shown: seed rows and unlabeled inputs, read, cleaned and PII-redacted exactly as the
data stage would prepare them, so nothing a user redacts reaches an outside endpoint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tuneloop.config import DataConfig, TaskConfig
from tuneloop.data.readers import read_rows
from tuneloop.data.rowwork import RowProcessor, process_rows
from tuneloop.errors import TuneloopError


@dataclass
class Seed:
    key: str  # the data stage's exact-duplicate key of the seed row: how `prepare` recognises it
    input: str  # the last user message
    answer: str  # the final assistant message
    label: str | None  # the first label field's value (task.label_fields), when there is one
    where: str  # file:line


@dataclass
class Skipped:
    where: str
    reason: str


def read_seeds(paths: list[Path], cfg: DataConfig, task: TaskConfig) -> tuple[list[Seed], list[Skipped]]:
    """Single-turn supervised rows the data stage keeps; the rest are skipped, saying why."""
    processor = RowProcessor(cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"near": False})}), task, None)
    seeds, skipped, keys = [], [], set()
    for path in paths:
        for outcome in process_rows(read_rows(path, decode=False), processor, 1):
            where = f"{outcome.source}:{outcome.line}"
            if outcome.rejection:
                skipped.append(Skipped(where, f"the data stage rejects it ({outcome.rejection['rule']})"))
                continue
            row = json.loads(outcome.row_json)
            turns = [m for m in row.get("messages", []) if m["role"] != "system"]
            if len(turns) != 2 or turns[0]["role"] != "user" or turns[1]["role"] != "assistant" or turns[1].get("tool_calls"):
                skipped.append(Skipped(where, "not a one-turn user/assistant row (multi-turn, tool-call and preference rows are not seeds)"))
            elif outcome.key in keys:
                skipped.append(Skipped(where, "a duplicate of an earlier seed"))
            else:
                keys.add(outcome.key)
                seeds.append(Seed(outcome.key, turns[0]["content"], turns[1]["content"], outcome.label, where))
    return seeds, skipped


def read_unlabeled(paths: list[Path], cfg: DataConfig, task: TaskConfig) -> list[tuple[str, str]]:
    """(file:line, input) for every unlabeled input, cleaned and redacted."""
    processor = RowProcessor(cfg, task, None)
    found = []
    for path in paths:
        for where, text in _inputs(Path(path)):
            text = processor.clean(text)
            if processor.redactor:
                text, _ = processor.redactor.redact(text)
            if text:
                found.append((where, text))
    return found


def _inputs(path: Path) -> Iterator[tuple[str, str]]:
    if not path.is_file():
        raise TuneloopError(f"{path}: unlabeled input file not found (data.synth.unlabeled)")
    if path.suffix.lower() == ".txt":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                yield f"{path}:{number}", line
        return
    for raw in read_rows(path):
        where, value = f"{raw.source}:{raw.line}", raw.value
        text = None
        if not raw.error and isinstance(value, dict):
            text = value.get("prompt") or value.get("input") or value.get("text")
            if text is None and isinstance(value.get("messages"), list):
                text = next((m.get("content") for m in reversed(value["messages"]) if isinstance(m, dict) and m.get("role") == "user"), None)
        if not isinstance(text, str):
            raise TuneloopError(f"{where}: an unlabeled input needs a `prompt`, `input` or `text` string, or `messages` "
                                "with a user message (or use a .txt file, one input per line)")
        yield where, text
