"""What a grader returns (`Grades`), the `Grader` protocol every grader type follows, and the one place
that turns per-sample outcomes (a score, or why there is none) into Grades."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

MESSAGES_KEPT = 5  # error messages kept per grader: enough to see what is wrong; all are counted


@dataclass
class Grades:
    total: list[float]  # one reward per sample (what the trainer uses)
    parts: dict[str, list[float]]  # per sub-grader (for multi: each key; for a single grader: {name: total})
    errors: dict[str, int]  # per grader name: samples that errored (they scored 0.0)
    messages: list[str]  # the first few error messages, e.g. "python grader 'g': sample 3: ZeroDivisionError: ..."


class Grader(Protocol):
    name: str

    def grade(self, outputs: list[str], items: list[dict]) -> Grades: ...


def collect(kind: str, name: str, outcomes: list[float | str]) -> Grades:
    """Grades of one grader from each sample's outcome: a score, or a message saying why it has none
    (that sample then scores 0.0 and counts as an error)."""
    total, messages, errors = [], [], 0
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, str):
            errors += 1
            total.append(0.0)
            if len(messages) < MESSAGES_KEPT:
                messages.append(f"{kind} grader '{name}': sample {i}: {outcome}")
        else:
            total.append(float(outcome))
    return Grades(total=total, parts={name: total}, errors={name: errors}, messages=messages)


def check_lengths(outputs: list[str], items: list[dict]) -> None:
    if len(outputs) != len(items):
        raise ValueError(f"{len(outputs)} outputs but {len(items)} items: one item per output is needed")
