"""json_schema (tuneloop's): 1.0 when the answer parses as a JSON object, strictly as the json_valid
metric parses it (no prose or code fences around it), and satisfies the schema: the grader's own, else
the task's output_schema; with neither, parsing is the whole test."""

from __future__ import annotations

import jsonschema

from tuneloop.config import TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.graders.grades import Grades, check_lengths, collect
from tuneloop.graders.specs import JsonSchemaSpec
from tuneloop.metrics.structure import parse_object


class JsonSchema:
    def __init__(self, spec: JsonSchemaSpec, task: TaskConfig):
        self.name = spec.name
        schema = spec.schema_ if spec.schema_ is not None else task.output_schema
        self.validator = None
        if schema is not None:
            kind = jsonschema.validators.validator_for(schema)
            try:
                kind.check_schema(schema)
            except jsonschema.SchemaError as err:
                raise TuneloopError(f"json_schema grader '{spec.name}': the schema is not a valid JSON schema ({err.message})") from None
            self.validator = kind(schema)

    def grade(self, outputs: list[str], items: list[dict]) -> Grades:
        check_lengths(outputs, items)
        outcomes: list[float | str] = []
        for output in outputs:
            value = parse_object(output)
            outcomes.append(float(value is not None and (self.validator is None or self.validator.is_valid(value))))
        return collect("json_schema", self.name, outcomes)
