"""Row forms: detect which of the supported shapes a row has and convert it to the canonical one.

Canonical forms written by the data stage:
- supervised: {"messages": [{"role", "content"[, "weight"]}, ...]} (OpenAI chat format);
- preference: {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}
  (TRL's conversational preference format).

Input forms: chat `messages`; `prompt`/`completion`; alpaca `instruction`/`input`/`output`;
preference `prompt`/`chosen`/`rejected`. Field names are configurable (`data.fields`).
"""

from __future__ import annotations

import json
from typing import Any

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection, check_messages, check_text

EXTRA_KEYS = {"metadata", "id"}  # carried along by many exporters; never trained on


def detect_form(row: dict, fields: FieldNames) -> str | None:
    if fields.messages in row:
        return "messages"
    if fields.chosen in row or fields.rejected in row:
        return "preference"
    if fields.instruction in row or fields.output in row:
        return "alpaca"
    if fields.prompt in row or fields.completion in row:
        return "prompt_completion"
    return None


def canonicalise(row: Any, form: str, fields: FieldNames) -> tuple[dict | None, str | None, Rejection | None]:
    """(canonical row, detected form, None) or (None, form, rejection)."""
    if not isinstance(row, dict):
        return None, None, Rejection("not_an_object", f"row is a JSON {type(row).__name__}, expected an object")
    detected = detect_form(row, fields) if form == "auto" else form
    if detected is None:
        names = f"'{fields.messages}', '{fields.prompt}'/'{fields.completion}', '{fields.instruction}'/'{fields.output}' or '{fields.chosen}'/'{fields.rejected}'"
        return None, None, Rejection("missing_messages", f"row has none of {names}", fields.messages)
    allowed = _KEYS[detected](fields) | EXTRA_KEYS
    unknown = sorted(set(row) - allowed)
    if unknown:
        return None, detected, Rejection("unknown_keys", f"unknown key(s) {unknown} for a {detected} row; expected {sorted(allowed)}")
    canonical, problem = _CONVERT[detected](row, fields)
    return canonical, detected, problem


def _from_messages(row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
    messages = row[f.messages]
    if isinstance(messages, str):  # CSV and Parquet exports often hold the list as a JSON string
        try:
            messages = json.loads(messages)
        except json.JSONDecodeError:
            return None, Rejection("wrong_type", f"'{f.messages}' is a string that is not a JSON list", f.messages)
    messages, problem = check_messages(messages, f.messages)
    return (None, problem) if problem else ({"messages": messages}, None)


def _from_prompt_completion(row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
    for key in (f.prompt, f.completion):
        problem = check_text(row, key)
        if problem:
            return None, problem
    return {"messages": [{"role": "user", "content": row[f.prompt]}, {"role": "assistant", "content": row[f.completion]}]}, None


def _from_alpaca(row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
    for key in (f.instruction, f.output):
        problem = check_text(row, key)
        if problem:
            return None, problem
    extra = row.get(f.input) or ""
    if not isinstance(extra, str):
        return None, Rejection("wrong_type", f"'{f.input}' must be a string, got {type(extra).__name__}", f.input)
    user = row[f.instruction] + (f"\n\n{extra}" if extra.strip() else "")
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": row[f.output]}]
    system = row.get(f.system)
    if isinstance(system, str) and system.strip():
        messages.insert(0, {"role": "system", "content": system})
    return {"messages": messages}, None


def _from_preference(row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
    prompt = row.get(f.prompt)
    if isinstance(prompt, list):
        prompt, problem = check_messages(prompt, f.prompt, need_assistant=False)
        if problem:
            return None, problem
    else:
        problem = check_text(row, f.prompt)
        if problem:
            return None, problem
        prompt = [{"role": "user", "content": prompt}]
    answers = {}
    for key in (f.chosen, f.rejected):
        value = row.get(key)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
            value = value[0].get("content")  # already conversational: [{"role": "assistant", ...}]
        problem = check_text({key: value}, key) if key in row else Rejection("missing_field", f"'{key}' is missing", key)
        if problem:
            return None, problem
        answers[key] = value
    if answers[f.chosen].strip() == answers[f.rejected].strip():
        return None, Rejection("identical_pair", "chosen and rejected answers are identical: nothing to prefer", f.rejected)
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": answers[f.chosen]}],
        "rejected": [{"role": "assistant", "content": answers[f.rejected]}],
    }, None


_KEYS = {
    "messages": lambda f: {f.messages},
    "prompt_completion": lambda f: {f.prompt, f.completion},
    "alpaca": lambda f: {f.instruction, f.input, f.output, f.system},
    "preference": lambda f: {f.prompt, f.chosen, f.rejected},
}
_CONVERT = {"messages": _from_messages, "prompt_completion": _from_prompt_completion, "alpaca": _from_alpaca, "preference": _from_preference}


def texts(row: dict) -> list[dict]:
    """The message dicts of a canonical row whose `content` gets cleaned and redacted."""
    if "messages" in row:
        return row["messages"]
    return [*row["prompt"], *row["chosen"], *row["rejected"]]


def answer(row: dict) -> str | None:
    """The final answer the model is trained to give (the chosen one for preference rows)."""
    if "messages" in row:
        last = row["messages"][-1]
        return last["content"] if last["role"] == "assistant" else None
    return row["chosen"][0]["content"]
