"""string_check: 1.0 when the rendered input compares to the rendered reference as `operation` says
(eq, ne; like = the reference is a substring of the input; ilike = the same, ignoring case), else 0.0.
Exact, as OpenAI's: no whitespace is stripped."""

from __future__ import annotations

from tuneloop.graders.grades import Grades, check_lengths, collect
from tuneloop.graders.specs import StringCheckSpec
from tuneloop.graders.templates import render, scope

OPERATIONS = {
    "eq": lambda text, reference: text == reference,
    "ne": lambda text, reference: text != reference,
    "like": lambda text, reference: reference in text,
    "ilike": lambda text, reference: reference.casefold() in text.casefold(),
}


class StringCheck:
    def __init__(self, spec: StringCheckSpec):
        self.spec, self.name = spec, spec.name
        self.compare = OPERATIONS[spec.operation]

    def grade(self, outputs: list[str], items: list[dict]) -> Grades:
        check_lengths(outputs, items)
        outcomes: list[float | str] = []
        for output, item in zip(outputs, items):
            names = scope(output, item)
            outcomes.append(float(self.compare(render(self.spec.input, names), render(self.spec.reference, names))))
        return collect("string_check", self.name, outcomes)
