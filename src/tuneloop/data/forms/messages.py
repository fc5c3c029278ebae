"""Chat `messages` rows (OpenAI's chat format): already canonical once each message is checked."""

from __future__ import annotations

import json

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection, check_messages


class Messages:
    name, order = "messages", 10

    def detect(self, row: dict, f: FieldNames) -> bool:
        return f.messages in row

    def keys(self, f: FieldNames) -> set[str]:
        return {f.messages}

    def convert(self, row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
        messages = row[f.messages]
        if isinstance(messages, str):  # CSV and Parquet exports often hold the list as a JSON string
            try:
                messages = json.loads(messages)
            except json.JSONDecodeError:
                return None, Rejection("wrong_type", f"'{f.messages}' is a string that is not a JSON list", f.messages)
        messages, problem = check_messages(messages, f.messages)
        return (None, problem) if problem else ({"messages": messages}, None)


FORMS = [Messages()]
