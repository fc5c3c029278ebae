"""Structure of JSON answers: validity, schema compliance, per-field accuracy, exact match.

- json_valid: the answer parses as a JSON object (strictly: no prose or code fences around it);
- schema_valid: it also satisfies the task's output schema;
- <field>_accuracy: the label field equals the reference's (0 when the answer is not JSON);
- exact_match: the parsed answer equals the parsed reference (whitespace and key order ignored),
  or for non-JSON references the stripped texts are equal.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from tuneloop.metrics import Context, sample_metric


def parse_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


@sample_metric
def structure(predictions: list[str], references: list[str], ctx: Context) -> list[dict[str, float]]:
    return [_one(p, r, ctx) for p, r in zip(predictions, references)]


def _one(prediction: str, reference: str, ctx: Context) -> dict[str, float]:
    predicted, expected = parse_object(prediction), parse_object(reference)
    scores = {"json_valid": float(predicted is not None)}
    if ctx.task.output_schema is not None:
        scores["schema_valid"] = float(predicted is not None and _valid(predicted, ctx.task.output_schema))
    for name in ctx.task.label_fields:
        same = predicted is not None and expected is not None and predicted.get(name) == expected.get(name)
        scores[f"{name}_accuracy"] = float(same)
    if expected is not None:
        scores["exact_match"] = float(predicted == expected)
    else:
        scores["exact_match"] = float(prediction.strip() == reference.strip())
    return scores


def _valid(value: Any, schema: dict) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True
