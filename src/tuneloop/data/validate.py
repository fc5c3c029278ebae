"""Validation checks on the structure of rows, with OpenAI's fine-tuning file checks as a floor.

Each failed check is a Rejection: a rule name (stable, for counting), a reason a person can act on,
and the field it concerns (e.g. `messages[2].content`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tuneloop.data.tool_rows import check_calls, check_conversation, check_tools

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id"}


@dataclass
class Rejection:
    rule: str
    reason: str
    field: str | None = None


def check_text(row: dict, key: str) -> Rejection | None:
    if key not in row or row[key] is None:
        return Rejection("missing_field", f"'{key}' is missing", key)
    if not isinstance(row[key], str):
        return Rejection("wrong_type", f"'{key}' must be a string, got {type(row[key]).__name__}", key)
    if not row[key].strip():
        return Rejection("empty_content", f"'{key}' is empty", key)
    return None


def check_messages(messages: Any, name: str = "messages", need_assistant: bool = True) -> tuple[list[dict] | None, Rejection | None]:
    if not isinstance(messages, list) or not messages:
        return None, Rejection("missing_messages", f"'{name}' must be a non-empty list of messages", name)
    clean = []
    for i, message in enumerate(messages):
        # Fast path for the common, valid message; anything unusual goes through the full checks.
        if type(message) is dict and len(message) == 2 and type(message.get("content")) is str \
                and message.get("role") in ROLES[:3] and message["content"].strip():  # a tool message needs its call id
            clean.append({"role": message["role"], "content": message["content"]})
            continue
        checked, problem = _check_message(message, f"{name}[{i}]")
        if problem:
            return None, problem
        clean.append(checked)
    if need_assistant and not any(m["role"] == "assistant" and m.get("weight", 1) for m in clean):
        return None, Rejection("no_assistant", "no assistant message to learn from", name)
    return clean, None


def _check_message(message: Any, where: str) -> tuple[dict | None, Rejection | None]:
    if not isinstance(message, dict):
        return None, Rejection("wrong_type", f"{where} must be an object, got {type(message).__name__}", where)
    calls = message.get("tool_calls") if message.get("role") == "assistant" else None
    for key in ("role", "content"):
        if key not in message and not (key == "content" and calls):
            return None, Rejection("message_missing_key", f"{where} has no '{key}'", f"{where}.{key}")
    unknown = sorted(set(message) - MESSAGE_KEYS)
    if unknown:
        return None, Rejection("unknown_keys", f"{where} has unknown key(s) {unknown}", where)
    if message["role"] not in ROLES:
        return None, Rejection("unknown_role", f"{where}.role is {message['role']!r}, expected one of {list(ROLES)}", f"{where}.role")
    if calls is not None or "tool_calls" in message or message["role"] == "tool":
        return check_tool_message(message, where)
    if not isinstance(message["content"], str):
        return None, Rejection("wrong_type", f"{where}.content must be a string, got {type(message['content']).__name__}", f"{where}.content")
    if not message["content"].strip():
        return None, Rejection("empty_content", f"{where}.content is empty", f"{where}.content")
    problem = check_weight(message, where)
    if problem:
        return None, problem
    return {k: message[k] for k in ("role", "content", "weight") if k in message}, None


def check_weight(message: dict, where: str) -> Rejection | None:
    """OpenAI's `weight`: 1 (learn from this turn) or 0 (do not), and 0 only on assistant messages."""
    weight = message.get("weight", 1)
    if isinstance(weight, bool) or weight not in (0, 1):
        return Rejection("bad_weight", f"{where}.weight is {weight!r}; it must be 0 (do not learn from this turn) or 1", f"{where}.weight")
    if weight == 0 and message["role"] != "assistant":
        return Rejection("bad_weight", f"{where}.weight is 0 on a {message['role']} message; only assistant turns are learned from, so only they take weight 0", f"{where}.weight")
    return None


def check_tool_message(message: dict, where: str) -> tuple[dict | None, Rejection | None]:
    """An assistant message with `tool_calls` (its content may be empty) or a `tool` message (the answer to one)."""
    role, content = message["role"], message.get("content")
    if role == "tool":
        if not isinstance(message.get("tool_call_id"), str) or not message["tool_call_id"]:
            return None, Rejection("message_missing_key", f"{where} is a tool message without 'tool_call_id'", f"{where}.tool_call_id")
        if not isinstance(content, str) or not content.strip():
            return None, Rejection("empty_content", f"{where}.content (the tool's result) must be a non-empty string", f"{where}.content")
        return {"role": "tool", "content": content, "tool_call_id": message["tool_call_id"]}, None
    if role != "assistant" or "tool_call_id" in message:
        return None, Rejection("unknown_keys", f"{where}: only assistant messages have tool_calls, only tool messages tool_call_id", where)
    if content is not None and not isinstance(content, str):
        return None, Rejection("wrong_type", f"{where}.content must be a string or null", f"{where}.content")
    problem = check_calls(message["tool_calls"], where)
    if problem:
        return None, Rejection(*problem)
    calls = [{"id": c["id"], "type": "function", "function": {"name": c["function"]["name"], "arguments": _as_text(c["function"].get("arguments", "{}"))}}
             for c in message["tool_calls"]]
    checked = {"role": "assistant", "content": content or "", "tool_calls": calls}
    if "weight" in message:
        problem = check_weight(message, where)
        if problem:
            return None, problem
        checked["weight"] = message["weight"]
    return checked, None


def check_tool_row(messages: list[dict], tools: Any, where: str) -> tuple[list[dict] | None, Rejection | None]:
    """A conversation's tool use against the row's `tools` (None when the row declares none)."""
    if tools is not None:
        tools, problem = check_tools(tools)
        if problem:
            return None, Rejection(*problem)
    problem = check_conversation(messages, tools, where)
    return (None, Rejection(*problem)) if problem else (tools, None)


def _as_text(arguments: Any) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
