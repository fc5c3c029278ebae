"""Alpaca rows (`instruction`, optional `input`, `output`, optional `system`) as a chat."""

from __future__ import annotations

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection, check_text


class Alpaca:
    name, order = "alpaca", 30

    def detect(self, row: dict, f: FieldNames) -> bool:
        return f.instruction in row or f.output in row

    def keys(self, f: FieldNames) -> set[str]:
        return {f.instruction, f.input, f.output, f.system}

    def convert(self, row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
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


FORMS = [Alpaca()]
