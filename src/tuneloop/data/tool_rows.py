"""Checks for tool-call rows (OpenAI's fine-tuning format): a row's `tools` are function definitions, an
assistant's `tool_calls` name declared functions with JSON-object arguments, and every call is answered by a
`tool` message carrying its id before the conversation moves on (and every tool message answers a call); a
conversation may end on an assistant's calls, the answer the model is to learn."""

from __future__ import annotations

import json
import re
from typing import Any

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
MAX_TOOLS = 128


def check_tools(tools: Any, where: str = "tools") -> tuple[list[dict] | None, tuple[str, str, str] | None]:
    """(the tools, None) or (None, (rule, reason, field))."""
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        return None, ("bad_tools", f"'{where}' must be a list of 1 to {MAX_TOOLS} tools", where)
    seen = set()
    for i, tool in enumerate(tools):
        at = f"{where}[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            return None, ("bad_tools", f'{at} must be {{"type": "function", "function": {{"name": ..., "parameters": ...}}}}', at)
        function = tool["function"]
        if not isinstance(function.get("name"), str) or not NAME.match(function["name"]):
            return None, ("bad_tools", f"{at}.function.name must be 1-64 letters, digits, _ or -", f"{at}.function.name")
        if function["name"] in seen:
            return None, ("bad_tools", f"{at}.function.name {function['name']!r} is declared twice", f"{at}.function.name")
        seen.add(function["name"])
        if "parameters" in function and not isinstance(function["parameters"], dict):
            return None, ("bad_tools", f"{at}.function.parameters must be a JSON Schema object", f"{at}.function.parameters")
    return tools, None


def check_calls(calls: Any, where: str) -> tuple[str, str, str] | None:
    """An assistant message's `tool_calls`: ids, function names, arguments that are a JSON object (as text)."""
    if not isinstance(calls, list) or not calls:
        return "bad_tool_calls", f"{where}.tool_calls must be a non-empty list", f"{where}.tool_calls"
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not call["id"] \
                or not isinstance(call.get("function"), dict) or call.get("type", "function") != "function":
            return "bad_tool_calls", f'{at} must be {{"id": ..., "type": "function", "function": {{"name", "arguments"}}}}', at
        function = call["function"]
        if not isinstance(function.get("name"), str):
            return "bad_tool_calls", f"{at}.function.name must be a string", f"{at}.function.name"
        arguments = function.get("arguments", "{}")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError as err:
            return "bad_arguments", f"{at}.function.arguments is not JSON ({err.msg} at character {err.pos})", f"{at}.function.arguments"
        if not isinstance(parsed, dict):
            return "bad_arguments", f"{at}.function.arguments must be a JSON object", f"{at}.function.arguments"
    return None


def check_conversation(messages: list[dict], tools: list[dict] | None, where: str) -> tuple[str, str, str] | None:
    """Names declared, every call answered before the next assistant or user turn, every answer to a call."""
    names = {t["function"]["name"] for t in tools or []}
    pending: dict[str, str] = {}  # call id -> where it was made
    for i, message in enumerate(messages):
        at = f"{where}[{i}]"
        if message["role"] == "tool":
            if message["tool_call_id"] not in pending:
                return "unmatched_tool_message", f"{at}.tool_call_id {message['tool_call_id']!r} answers no open tool call", f"{at}.tool_call_id"
            del pending[message["tool_call_id"]]
            continue
        if pending:
            first = next(iter(pending))
            return "unanswered_tool_call", f"tool call {first!r} ({pending[first]}) has no tool message before {at}", pending[first]
        for j, call in enumerate(message.get("tool_calls") or []):
            if call["function"]["name"] not in names:
                field = f"{at}.tool_calls[{j}].function.name"
                declared = ", ".join(sorted(names)) or "none: the row has no 'tools'"
                return "undeclared_tool", f"{field} {call['function']['name']!r} is not in the row's tools ({declared})", field
            pending[call["id"]] = f"{at}.tool_calls[{j}]"
    # A conversation may end on the calls themselves: that is what the model learns to make.
    return None
