"""ShareGPT rows (`conversations` of `{"from", "value"}` turns, optional `system` and `tools`) as a chat.

The shape FastChat, Axolotl and LLaMA-Factory read. `from` names the speaker: human/user, gpt/assistant/
model/chatgpt/bing, system, function_call (the assistant calls a tool; `value` is the JSON of
{"name", "arguments"} or of a list of them) or observation (a tool's result, answering the oldest call not
answered yet). `tools` lists function definitions, bare or in OpenAI's {"type": "function", ...} form, or
holds the JSON text of that list. A turn's `weight` (0 or 1, assistant turns only) is kept as in the chat
form. The row becomes canonical chat `messages`; the checks are the chat form's.
"""

from __future__ import annotations

import json
from typing import Any

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection, check_messages, check_tool_row

SPEAKERS = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant", "bing": "assistant",
    "system": "system", "function_call": "assistant", "observation": "tool",
}
TURN_KEYS = {"from", "value", "weight"}


class ShareGpt:
    # Last in detection order: a row that any other form recognises stays that form's.
    name, order = "sharegpt", 50

    def detect(self, row: dict, f: FieldNames) -> bool:
        return f.conversations in row

    def keys(self, f: FieldNames) -> set[str]:
        return {f.conversations, f.system, "tools"}

    def convert(self, row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
        name = f.conversations
        turns, problem = row.get(name), None
        if isinstance(turns, str):  # CSV and Parquet exports often hold the list as JSON text
            turns, problem = _json_value(turns, name, list)
        messages, problem = (None, problem) if problem else _messages(turns, name)
        if problem:
            return None, problem
        messages, problem = check_messages(messages, name)
        if problem:
            return None, problem
        tools, problem = _tools(row.get("tools"))
        if not problem and (tools or any(m["role"] == "tool" or m.get("tool_calls") for m in messages)):
            tools, problem = check_tool_row(messages, tools, name)
        if not problem:
            problem = _add_system(messages, row.get(f.system), f.system)
        return (None, problem) if problem else ({"messages": messages, **({"tools": tools} if tools else {})}, None)


def _messages(turns: Any, name: str) -> tuple[list[dict] | None, Rejection | None]:
    """ShareGPT turns as OpenAI chat messages, one for one (so `name[i]` in a rejection is the row's turn i)."""
    if not isinstance(turns, list) or not turns:
        return None, Rejection("missing_messages", f"'{name}' must be a non-empty list of turns", name)
    messages, pending = [], []  # pending: ids of tool calls no observation has answered yet
    for i, turn in enumerate(turns):
        at = f"{name}[{i}]"
        if not isinstance(turn, dict):
            return None, Rejection("wrong_type", f"{at} must be an object, got {type(turn).__name__}", at)
        turn = {k: v for k, v in turn.items() if v is not None}  # Arrow gives every turn every field, null where absent
        unknown = sorted(set(turn) - TURN_KEYS)
        if unknown:
            return None, Rejection("unknown_keys", f"{at} has unknown key(s) {unknown}; expected {sorted(TURN_KEYS)}", at)
        for key in ("from", "value"):
            if key not in turn:
                return None, Rejection("message_missing_key", f"{at} has no '{key}'", f"{at}.{key}")
        speaker, value = turn["from"], turn["value"]
        role = SPEAKERS.get(speaker.lower()) if isinstance(speaker, str) else None
        if role is None:
            return None, Rejection("unknown_role", f"{at}.from is {speaker!r}, expected one of {list(SPEAKERS)}", f"{at}.from")
        if not isinstance(value, str):
            return None, Rejection("wrong_type", f"{at}.value must be a string, got {type(value).__name__}", f"{at}.value")
        if not value.strip():
            return None, Rejection("empty_content", f"{at}.value is empty", f"{at}.value")
        message: dict = {"role": role, "content": value}
        if speaker.lower() == "function_call":
            calls, problem = _calls(value, at, i)
            if problem:
                return None, problem
            message = {"role": "assistant", "content": "", "tool_calls": calls}
            pending += [call["id"] for call in calls]
        elif role == "tool":
            if not pending:
                return None, Rejection("unmatched_tool_message", f"{at} is an observation that answers no function_call before it", at)
            message["tool_call_id"] = pending.pop(0)
        if "weight" in turn:
            message["weight"] = turn["weight"]
        messages.append(message)
    return messages, None


def _calls(value: str, at: str, turn: int) -> tuple[list[dict] | None, Rejection | None]:
    """A function_call turn's value ({"name", "arguments"} or a list of them) as OpenAI tool_calls."""
    parsed, problem = _json_value(value, f"{at}.value", (dict, list))
    if problem:
        return None, Rejection("bad_tool_calls", f'{at}.value of a function_call must be the JSON of {{"name": ..., "arguments": {{...}}}} or a list of them', f"{at}.value")
    calls = []
    for j, call in enumerate(parsed if isinstance(parsed, list) else [parsed]):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return None, Rejection("bad_tool_calls", f"{at}.value call {j} needs a 'name'", f"{at}.value")
        arguments = call.get("arguments", {})
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        calls.append({"id": f"call_{turn}_{j}", "type": "function", "function": {"name": call["name"], "arguments": text}})
    return calls, None


def _tools(tools: Any) -> tuple[list[dict] | None, Rejection | None]:
    """The row's function definitions in OpenAI's form (None when it has none)."""
    if tools in (None, "", []):
        return None, None
    tools, problem = _json_value(tools, "tools", list)
    if problem:
        return None, Rejection("bad_tools", "'tools' must be a list of function definitions (or its JSON text)", "tools")
    return [t if isinstance(t, dict) and "type" in t else {"type": "function", "function": t} for t in tools], None


def _add_system(messages: list[dict], system: Any, key: str) -> Rejection | None:
    """The row's `system` text as the first message; one that differs from a system turn is an error."""
    if system is None or (isinstance(system, str) and not system.strip()):
        return None
    if not isinstance(system, str):
        return Rejection("wrong_type", f"'{key}' must be a string, got {type(system).__name__}", key)
    if messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    elif messages[0]["content"].strip() != system.strip():
        return Rejection("conflicting_system", f"'{key}' and the first turn (from system) disagree; keep one", key)
    return None


def _json_value(value: Any, where: str, kinds: type | tuple[type, ...]) -> tuple[Any, Rejection | None]:
    """`value`, or the JSON it holds as text, when it is of `kinds`."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, Rejection("wrong_type", f"'{where}' is a string that is not JSON", where)
    if not isinstance(value, kinds):
        return None, Rejection("wrong_type", f"'{where}' must be a {'list' if kinds is list else 'JSON object or list'}, got {type(value).__name__}", where)
    return value, None


FORMS = [ShareGpt()]
