"""Validation: turn one raw row into canonical chat `messages`, or say precisely why not.

The checks follow OpenAI's fine-tuning file validation as a floor: row not an object, missing
messages, message missing role/content, unknown keys, unknown role, empty content, no assistant
message. Prompt/completion rows are accepted and converted to messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ROLES = {"system", "user", "assistant"}
MESSAGE_KEYS = {"role", "content", "weight", "name"}
ROW_KEYS = {"messages", "prompt", "completion", "metadata"}


@dataclass
class Rejection:
    rule: str
    reason: str
    field: str | None = None


def canonicalise(row: Any, system_prompt: str | None = None) -> tuple[list[dict] | None, Rejection | None]:
    """(messages, None) for a usable row, (None, rejection) otherwise."""
    if not isinstance(row, dict):
        return None, Rejection("not_an_object", f"row is a JSON {type(row).__name__}, expected an object")
    unknown = sorted(set(row) - ROW_KEYS)
    if unknown:
        return None, Rejection("unknown_keys", f"unknown key(s) {unknown}; expected 'messages' or 'prompt'/'completion'")
    if "messages" in row:
        messages, problem = _check_messages(row["messages"])
    elif "prompt" in row or "completion" in row:
        messages, problem = _from_prompt_completion(row)
    else:
        return None, Rejection("missing_messages", "row has no 'messages' (nor 'prompt'/'completion')", "messages")
    if problem:
        return None, problem
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages, None


def _from_prompt_completion(row: dict) -> tuple[list[dict] | None, Rejection | None]:
    for key in ("prompt", "completion"):
        if key not in row:
            return None, Rejection("missing_field", f"'{key}' is missing", key)
        if not isinstance(row[key], str):
            return None, Rejection("wrong_type", f"'{key}' must be a string, got {type(row[key]).__name__}", key)
        if not row[key].strip():
            return None, Rejection("empty_content", f"'{key}' is empty", key)
    return [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}], None


def _check_messages(messages: Any) -> tuple[list[dict] | None, Rejection | None]:
    if not isinstance(messages, list) or not messages:
        return None, Rejection("missing_messages", "'messages' must be a non-empty list", "messages")
    clean = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            return None, Rejection("wrong_type", f"{where} must be an object", where)
        for key in ("role", "content"):
            if key not in message:
                return None, Rejection("message_missing_key", f"{where} has no '{key}'", f"{where}.{key}")
        unknown = sorted(set(message) - MESSAGE_KEYS)
        if unknown:
            return None, Rejection("unknown_keys", f"{where} has unknown key(s) {unknown}", where)
        if message["role"] not in ROLES:
            return None, Rejection("unknown_role", f"{where}.role is '{message['role']}', expected one of {sorted(ROLES)}", f"{where}.role")
        if not isinstance(message["content"], str):
            return None, Rejection("wrong_type", f"{where}.content must be a string", f"{where}.content")
        if not message["content"].strip():
            return None, Rejection("empty_content", f"{where}.content is empty", f"{where}.content")
        clean.append({"role": message["role"], "content": message["content"]})
    if not any(m["role"] == "assistant" for m in clean):
        return None, Rejection("no_assistant", "no assistant message to learn from", "messages")
    return clean, None
