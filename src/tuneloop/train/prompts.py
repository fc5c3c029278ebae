"""The prompts of a split, for objectives that generate (GRPO's rollouts, validation by task metrics), and the
task the data stage prepared them for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneloop.artifacts import read_jsonl, read_manifest
from tuneloop.config import TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.models.chat import last_text, render_prompt


@dataclass
class Prompt:
    ids: list[int]  # the rendered prompt's tokens, ending with the assistant's turn opening
    item: dict  # what graders see as `item`: reference, input, messages and the row's other fields


def read_prompts(tokenizer, path: Path) -> list[Prompt]:
    """Each row's conversation up to its last assistant turn, which becomes the reference answer."""
    prompts = []
    for row in read_jsonl(path):
        if "messages" in row:
            messages = row["messages"]
            last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=len(messages))
            context, reference = messages[:last], last_text(messages[last:], "assistant")
        else:  # a preference row: its prompt, with the chosen answer as the reference
            context, reference = row["prompt"], last_text(row["chosen"], "assistant")
        ids = tokenizer(render_prompt(tokenizer, context, row.get("tools")), add_special_tokens=False)["input_ids"]
        extra = {k: v for k, v in row.items() if k not in ("messages", "prompt", "chosen", "rejected")}
        prompts.append(Prompt(ids, {**extra, "reference": reference, "input": last_text(context), "messages": context}))
    return prompts


def task_of(data_dir: Path) -> TaskConfig:
    """The task of the data stage's manifest (system prompt, schema, label fields); the default task without one."""
    try:
        return TaskConfig.model_validate(read_manifest(data_dir).get("task") or {})
    except TuneloopError:
        return TaskConfig()
