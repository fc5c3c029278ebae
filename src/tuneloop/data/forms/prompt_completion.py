"""`prompt`/`completion` rows as a one-turn chat."""

from __future__ import annotations

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection, check_text


class PromptCompletion:
    name, order = "prompt_completion", 40

    def detect(self, row: dict, f: FieldNames) -> bool:
        return f.prompt in row or f.completion in row

    def keys(self, f: FieldNames) -> set[str]:
        return {f.prompt, f.completion}

    def convert(self, row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
        for key in (f.prompt, f.completion):
            problem = check_text(row, key)
            if problem:
                return None, problem
        return {"messages": [{"role": "user", "content": row[f.prompt]}, {"role": "assistant", "content": row[f.completion]}]}, None


FORMS = [PromptCompletion()]
