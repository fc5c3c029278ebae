"""Chat `messages` rows (OpenAI's chat format): already canonical once each message is checked."""

from __future__ import annotations

import json

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection, check_messages, check_tool_row


class Messages:
    name, order = "messages", 10

    def detect(self, row: dict, f: FieldNames) -> bool:
        return f.messages in row

    def keys(self, f: FieldNames) -> set[str]:
        return {f.messages, "tools"}

    def convert(self, row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
        messages = row[f.messages]
        if isinstance(messages, str):  # CSV and Parquet exports often hold the list as a JSON string
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                return None, Rejection("wrong_type", f"'{f.messages}' is a string that is not a JSON list", f.messages)
        messages, problem = check_messages(messages, f.messages)
        if problem:
            return None, problem
        if "tools" not in row and not any(m["role"] == "tool" or m.get("tool_calls") for m in messages):
            return {"messages": messages}, None
        tools, problem = check_tool_row(messages, row.get("tools"), f.messages)  # OpenAI's function-calling rows
        return (None, problem) if problem else ({"messages": messages, **({"tools": tools} if tools else {})}, None)


FORMS = [Messages()]
