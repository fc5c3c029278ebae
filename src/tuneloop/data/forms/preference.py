"""Preference rows (`prompt`/`chosen`/`rejected`), written in TRL's conversational preference form."""

from __future__ import annotations

from tuneloop.config import FieldNames
from tuneloop.data.validate import Rejection, check_messages, check_text


class Preference:
    name, order = "preference", 20

    def detect(self, row: dict, f: FieldNames) -> bool:
        return f.chosen in row or f.rejected in row

    def keys(self, f: FieldNames) -> set[str]:
        return {f.prompt, f.chosen, f.rejected}

    def convert(self, row: dict, f: FieldNames) -> tuple[dict | None, Rejection | None]:
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


FORMS = [Preference()]
