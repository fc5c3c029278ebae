"""multi: several graders on the same answers, combined per sample by `calculate_output`, an arithmetic
formula over their keys (numbers, + - * /, unary -, parentheses, min, max, abs), or by their mean.

The formula is checked when the config loads (specs.formula_problem) and evaluated here by walking its
syntax tree: nothing of it is ever handed to eval(), and a node outside that arithmetic is refused
again here. A sample whose formula fails (a division by zero) scores 0.0 and counts as the multi
grader's error; a sub-grader's errors count under its own name (its key, unless it was named).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from tuneloop.graders.grades import Grader, Grades, check_lengths, collect
from tuneloop.graders.specs import MultiSpec

BINARY: dict[type, Callable[[float, float], float]] = {ast.Add: operator.add, ast.Sub: operator.sub,
                                                       ast.Mult: operator.mul, ast.Div: operator.truediv}
UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
CALLS: dict[str, Callable[..., float]] = {"min": min, "max": max, "abs": abs}


def evaluate(node: ast.AST, values: dict[str, float]) -> float:
    """The value of a checked formula's tree, given each grader key's score."""
    if isinstance(node, ast.Expression):
        return evaluate(node.body, values)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.Name) and node.id in values:
        return values[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](evaluate(node.operand, values))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        return BINARY[type(node.op)](evaluate(node.left, values), evaluate(node.right, values))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CALLS and not node.keywords:
        return CALLS[node.func.id](*(evaluate(arg, values) for arg in node.args))
    raise ValueError(f"{ast.unparse(node)!r} is not allowed in a formula")


class Multi:
    def __init__(self, spec: MultiSpec, graders: dict[str, Grader]):
        self.name, self.graders = spec.name, graders
        self.formula = ast.parse(spec.calculate_output, mode="eval") if spec.calculate_output is not None else None

    def grade(self, outputs: list[str], items: list[dict]) -> Grades:
        check_lengths(outputs, items)
        subs = {key: grader.grade(outputs, items) for key, grader in self.graders.items()}
        outcomes = [self._combine({key: g.total[i] for key, g in subs.items()}) for i in range(len(outputs))]
        own = collect("multi", self.name, outcomes)
        errors: dict[str, int] = {}
        for grades in (*subs.values(), own):
            for name, count in grades.errors.items():
                errors[name] = errors.get(name, 0) + count
        messages = [m for grades in subs.values() for m in grades.messages] + own.messages
        return Grades(total=own.total, parts={key: g.total for key, g in subs.items()}, errors=errors, messages=messages)

    def _combine(self, values: dict[str, float]) -> float | str:
        if self.formula is None:
            return sum(values.values()) / len(values)
        try:
            value = evaluate(self.formula, values)
        except (ArithmeticError, ValueError) as err:
            return f"calculate_output: {type(err).__name__}: {err}"
        return value if math.isfinite(value) else f"calculate_output gave {value}"
