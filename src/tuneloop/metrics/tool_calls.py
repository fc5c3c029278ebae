"""Tool calls (tasks whose rows declare `tools`): did the model call the right functions with the right
arguments? Answers are parsed as models/tools.py writes calls.

- tool_name_accuracy: the called function names equal the reference's (a reference with no call expects none);
- tool_arguments_match: names and arguments equal (arguments compared as parsed JSON);
- tool_arguments_valid: every call names a declared function and its arguments satisfy that function's
  `parameters` schema (an answer with no call is valid only where none was expected).
"""

from __future__ import annotations

import json

import jsonschema

from tuneloop.metrics import Context, sample_metric
from tuneloop.models.tools import functions, parse_calls


@sample_metric
def tool_calls(predictions: list[str], references: list[str], ctx: Context) -> list[dict[str, float]]:
    if ctx.tools is None:
        return [{} for _ in predictions]
    return [_one(p, r, t) for p, r, t in zip(predictions, references, ctx.tools)]


def _one(prediction: str, reference: str, tools: list[dict] | None) -> dict[str, float]:
    declared = {f["name"]: f.get("parameters") or {"type": "object"} for f in functions(tools)}
    expected, predicted = _calls(reference, declared), _calls(prediction, declared)
    names = [name for name, _ in predicted] == [name for name, _ in expected]
    return {"tool_name_accuracy": float(names), "tool_arguments_match": float(names and predicted == expected),
            "tool_arguments_valid": float(all(_valid(args, declared[name]) for name, args in predicted) if predicted else not expected)}


def _calls(text: str, declared: dict[str, dict]) -> list[tuple[str, dict]]:
    _, calls = parse_calls(text, set(declared))
    return [(c["name"], json.loads(c["arguments"])) for c in calls or []]


def _valid(arguments: dict, schema: dict) -> bool:
    try:
        jsonschema.validate(arguments, schema)
    except (jsonschema.ValidationError, jsonschema.SchemaError):
        return False
    return True
