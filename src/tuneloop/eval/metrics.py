"""Per-sample scores for structured (JSON) answers and their aggregation.

Every metric is a mean of per-sample values in [0, 1], so each can carry a confidence interval and
a paired comparison later.
- json_valid: the answer parses as a JSON object (strictly: no prose or code fences around it);
- schema_valid: it also satisfies the task's output schema;
- <field>_accuracy: the label field equals the reference's (0 when the answer is not JSON);
- exact_match: the parsed answer equals the parsed reference (whitespace and key order ignored).
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from tuneloop.config import TaskConfig


def parse_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def score(prediction: str, reference: str, task: TaskConfig) -> dict[str, float]:
    predicted, expected = parse_object(prediction), parse_object(reference)
    scores = {"json_valid": float(predicted is not None)}
    if task.output_schema is not None:
        scores["schema_valid"] = float(predicted is not None and _valid(predicted, task.output_schema))
    for field in task.label_fields:
        same = predicted is not None and expected is not None and predicted.get(field) == expected.get(field)
        scores[f"{field}_accuracy"] = float(same)
    if expected is not None:
        scores["exact_match"] = float(predicted == expected)
    else:
        scores["exact_match"] = float(prediction.strip() == reference.strip())
    return scores


def aggregate(per_sample: list[dict[str, float]]) -> dict[str, float]:
    names = per_sample[0].keys() if per_sample else []
    return {name: sum(s[name] for s in per_sample) / len(per_sample) for name in names}


def _valid(value: Any, schema: dict) -> bool:
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError:
        return False
    return True
