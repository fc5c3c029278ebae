"""The conversations each system answers: the same test inputs, framed per system.

- base, finetuned: the test conversation as it is (the task's system prompt included, as in training);
- prompted: engineered instructions (the system prompt, plus the output schema spelled out) and
  `few_shot` solved examples from the train split as earlier user/assistant turns;
- rag: the same frame, with the `rag_k` train examples most similar to the input (MiniLM cosine),
  i.e. retrieval of labelled examples from the team's own data; or, with a knowledge base
  (eval.rag_index), the `rag_k` best passages of it, in the template the server uses.
- constrained: the finetuned model's conversations, decoded under the task's output schema (or, for rows with
  tools, the tool-call grammar): what constrained decoding adds on top of fine-tuning.
The baselines use the base model: what you would get without fine-tuning.
"""

from __future__ import annotations

import json
import random

import numpy as np

from tuneloop.config import EvalConfig, TaskConfig
from tuneloop.models.chat import last_text
from tuneloop.models.embed import embed
from tuneloop.models.tools import answer_text


def split_row(row: dict) -> tuple[list[dict], str]:
    """(conversation before the answer, reference answer) for chat or preference rows; an answer that calls
    tools is its text with the calls written as the model writes them (models/tools.py)."""
    if "messages" in row:
        return [_plain(m) for m in row["messages"][:-1]], answer_text(row["messages"][-1])
    return [_plain(m) for m in row["prompt"]], row["chosen"][-1]["content"]


def conversations_for(system: str, conversations: list[list[dict]], train_rows: list[dict], task: TaskConfig, cfg: EvalConfig,
                      passages: list[list] | None = None) -> list[list[dict]]:
    """`passages`: the knowledge-base hits per conversation, when the rag system answers from documents."""
    if system in ("base", "finetuned", "constrained"):
        return conversations
    if system == "rag" and passages is not None:
        from tuneloop.rag.template import augment

        return [augment(_framed(c, [], task), hits) for c, hits in zip(conversations, passages)]
    examples = [split_row(r) for r in train_rows]
    if system == "prompted":
        shots = random.Random(cfg.seed).sample(examples, min(cfg.few_shot, len(examples)))
        return [_framed(conversation, shots, task) for conversation in conversations]
    # rag: nearest train examples to each test input
    if not examples:
        return [_framed(c, [], task) for c in conversations]
    index = embed([last_text(c) for c, _ in examples])
    queries = embed([last_text(c) for c in conversations])
    nearest = np.argsort(-(queries @ index.T), axis=1)[:, : cfg.rag_k]
    # Most similar example last, right before the question, where a small model attends most.
    return [_framed(c, [examples[j] for j in reversed(row)], task) for c, row in zip(conversations, nearest)]


def _framed(conversation: list[dict], shots: list[tuple[list[dict], str]], task: TaskConfig) -> list[dict]:
    instructions = [m["content"] for m in conversation if m["role"] == "system"] or ([task.system_prompt] if task.system_prompt else [])
    if task.output_schema is not None:
        instructions.append("Reply with one JSON object only, no other text, matching this JSON schema: "
                            + json.dumps(task.output_schema, separators=(",", ":")))
    framed = [{"role": "system", "content": "\n\n".join(instructions)}] if instructions else []
    for shot, answer in shots:
        framed += [{"role": "user", "content": last_text(shot)}, {"role": "assistant", "content": answer}]
    return framed + [m for m in conversation if m["role"] != "system"]


def _plain(message: dict) -> dict:
    return {k: message[k] for k in ("role", "content", "tool_calls", "tool_call_id") if k in message}
