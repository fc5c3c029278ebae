"""Templates of grader inputs: `{{sample.output_text}}`, `{{sample.output_json.FIELD}}` and
`{{item.FIELD.SUB}}` are replaced by the answer, a field of the answer parsed as JSON, or a field of
the row (`reference`, `input`, `messages` and the row's own fields). A missing field renders as "".
specs.py checks the references when the config loads; here they are only looked up."""

from __future__ import annotations

import json
from typing import Any

from tuneloop.graders.specs import TEMPLATE
from tuneloop.metrics.structure import parse_object


def scope(output: str, item: dict) -> dict[str, Any]:
    """What a template (and a python grader) sees of one sample: the answer and its row."""
    return {"sample": {"output_text": output, "output_json": parse_object(output)}, "item": item}


def render(template: str, names: dict[str, Any]) -> str:
    return TEMPLATE.sub(lambda match: _text(_lookup(names, match[1].split("."))), template)


def _lookup(value: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]  # item.messages.0.content
        else:
            return None
    return value


def _text(value: Any) -> str:
    # Numbers, booleans, lists and objects as JSON, so {{item.expected}} of 3 reads "3" and true reads "true".
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
