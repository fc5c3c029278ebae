"""Behaviour of the answer regardless of the reference: empty output, refusals, length."""

from __future__ import annotations

import re

from tuneloop.metrics import Context, sample_metric

# Openings of the usual refusals and disclaimers of instruction-tuned models.
REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry, |i can(?:no|')t|i cannot|i'?m (?:not able|unable)|i am (?:not able|unable)|"
    r"as an ai\b|i (?:won'?t|will not) be able)",
    re.IGNORECASE,
)


@sample_metric
def behaviour(predictions: list[str], references: list[str], ctx: Context) -> list[dict[str, float]]:
    return [
        {"empty": float(not p.strip()), "refusal": float(bool(REFUSAL.match(p))), "length_chars": float(len(p))}
        for p in predictions
    ]
