"""Row forms: detect which of the supported shapes a row has and convert it to the canonical one.

Canonical forms written by the data stage:
- supervised: {"messages": [{"role", "content"[, "weight"]}, ...]} (OpenAI chat format);
- preference: {"prompt": [messages], "chosen": [assistant message], "rejected": [assistant message]}
  (TRL's conversational preference format).

Input forms, one file each in this package (see base.Form): chat `messages`; `prompt`/`completion`;
alpaca `instruction`/`input`/`output`; preference `prompt`/`chosen`/`rejected`; ShareGPT `conversations`
of `from`/`value` turns. Field names are
configurable (`data.fields`). Every module lists its forms in `FORMS` and they are collected here, so a
new input form is one new file (plus its name in config.DataConfig.form; a test checks that the two agree).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from typing import Any

from tuneloop.config import FieldNames
from tuneloop.data.forms.base import Form
from tuneloop.data.validate import Rejection
from tuneloop.models.tools import answer_text

EXTRA_KEYS = {"metadata", "id"}  # carried along by many exporters; never trained on


@functools.cache
def forms() -> dict[str, Form]:
    """Every form of this package's modules, by name, in detection order."""
    found: list[Form] = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            found += getattr(importlib.import_module(f"{__name__}.{module.name}"), "FORMS", [])
    return {form.name: form for form in sorted(found, key=lambda form: form.order)}


def detect_form(row: dict, fields: FieldNames) -> str | None:
    return next((name for name, form in forms().items() if form.detect(row, fields)), None)


def canonicalise(row: Any, form: str, fields: FieldNames) -> tuple[dict | None, str | None, Rejection | None]:
    """(canonical row, detected form, None) or (None, form, rejection)."""
    if not isinstance(row, dict):
        return None, None, Rejection("not_an_object", f"row is a JSON {type(row).__name__}, expected an object")
    detected = detect_form(row, fields) if form == "auto" else form
    if detected is None:
        names = (f"'{fields.messages}', '{fields.prompt}'/'{fields.completion}', '{fields.instruction}'/'{fields.output}', "
                 f"'{fields.chosen}'/'{fields.rejected}' or '{fields.conversations}'")
        return None, None, Rejection("missing_messages", f"row has none of {names}", fields.messages)
    allowed = forms()[detected].keys(fields) | EXTRA_KEYS
    unknown = sorted(set(row) - allowed)
    if unknown:
        return None, detected, Rejection("unknown_keys", f"unknown key(s) {unknown} for a {detected} row; expected {sorted(allowed)}")
    canonical, problem = forms()[detected].convert(row, fields)
    return canonical, detected, problem


def texts(row: dict) -> list[dict]:
    """The message dicts of a canonical row whose `content` gets cleaned and redacted."""
    if "messages" in row:
        return row["messages"]
    return [*row["prompt"], *row["chosen"], *row["rejected"]]


def answer(row: dict) -> str | None:
    """The final answer the model is trained to give (the chosen one for preference rows)."""
    if "messages" in row:
        last = row["messages"][-1]
        if last.get("tool_calls"):  # the calls as the model writes them
            return answer_text(last)
        return last["content"] if last["role"] == "assistant" else None
    return row["chosen"][0]["content"]
