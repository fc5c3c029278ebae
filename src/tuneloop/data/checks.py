"""Checks on a canonical row's content: is the answer valid for the task, and does the row fit the model?

AnswerChecker: for structured tasks the answer we train on must itself parse and satisfy the output
schema, and label fields must hold an allowed value (garbage in, garbage out).
LengthChecker: the token length of the row as the model will see it (its tokenizer and chat template),
dropping or truncating rows over the limit.
"""

from __future__ import annotations

import jsonschema
import orjson

from tuneloop.config import ModelConfig, TaskConfig
from tuneloop.data.forms import answer
from tuneloop.data.validate import Rejection


class AnswerChecker:
    def __init__(self, task: TaskConfig, allowed_labels: dict[str, list[str]]):
        self.task = task
        self.schema = jsonschema.Draft202012Validator(task.output_schema) if task.output_schema else None
        properties = (task.output_schema or {}).get("properties", {})
        # Allowed label values: declared explicitly, or the enum of that field in the output schema.
        self.allowed = {
            name: set(allowed_labels.get(name) or properties.get(name, {}).get("enum") or [])
            for name in task.label_fields
        }

    def __call__(self, row: dict) -> tuple[Rejection | None, str | None]:
        """(rejection or None, the first label field's value for stratifying the split)."""
        if self.schema is None and not self.task.label_fields:
            return None, None
        field = self._field(row)
        try:
            value = orjson.loads(answer(row) or "")
        except orjson.JSONDecodeError:
            return Rejection("answer_not_json", "the assistant answer is not valid JSON", field), None
        if self.schema is not None:
            error = jsonschema.exceptions.best_match(self.schema.iter_errors(value))
            if error is not None:
                path = "".join(f".{p}" for p in error.absolute_path)
                return Rejection("answer_schema", f"the assistant answer breaks the output schema at '${path}': {error.message}", field), None
        labels = value if isinstance(value, dict) else {}
        for name, allowed in self.allowed.items():
            if allowed and labels.get(name) not in allowed:
                return Rejection("label_not_allowed", f"label '{name}' is {labels.get(name)!r}, allowed: {sorted(allowed)}", f"{field}.{name}"), None
        first = self.task.label_fields[0] if self.task.label_fields else None
        return None, (str(labels.get(first)) if first and isinstance(value, dict) else None)

    @staticmethod
    def _field(row: dict) -> str:
        return f"messages[{len(row['messages']) - 1}].content" if "messages" in row else "chosen[0].content"


class LengthChecker:
    """Token length with the target model's chat template, and whether the row was truncated or must go."""

    def __init__(self, model: ModelConfig, max_tokens: int | None, over_length: str):
        from tuneloop.models import load_tokenizer

        self.tokenizer = load_tokenizer(model.name)
        self.max_tokens = max_tokens
        self.over_length = over_length

    def render(self, row: dict) -> str:
        from tuneloop.models.chat import render_chat

        conversation = row["messages"] if "messages" in row else [*row["prompt"], *row["chosen"]]
        return render_chat(self.tokenizer, conversation)

    def __call__(self, row: dict) -> tuple[int, bool, Rejection | None]:
        n = len(self.tokenizer(self.render(row), add_special_tokens=False)["input_ids"])
        if self.max_tokens is None or n <= self.max_tokens:
            return n, False, None
        if self.over_length == "truncate":  # the training stage cuts at max_seq_len; we record it here
            return self.max_tokens, True, None
        reason = f"{n} tokens with the chat template, over max_tokens={self.max_tokens}; raise data.max_tokens or set data.over_length: truncate"
        return n, False, Rejection("too_long", reason)
