"""The typed configs of the graders: one pydantic model per grader type, and `GraderSpec`, their union
on the field `type` (the shape of OpenAI's grader objects, plus tuneloop's `json_schema` and `metric`).

Only pydantic and the standard library are imported here: config.py imports this module for
`objective.reward`, and anything of tuneloop imported back would make a cycle. The grading code is in
the sibling modules, one per type; build.py turns a spec into a grader.

Templates (`{{sample.output_text}}`, `{{sample.output_json.FIELD}}`, `{{item.FIELD.SUB}}`) and
`multi` formulas are checked here, so a typo fails when the config loads, not mid-training.
"""

from __future__ import annotations

import ast
import keyword
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, ValidationInfo,
                      WrapValidator, field_validator, model_validator)

TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")
SAMPLE_TEXT = "{{sample.output_text}}"
ITEM_REFERENCE = "{{item.reference}}"
# Calls a `multi` formula may make, with (fewest, most) arguments.
FORMULA_CALLS = {"min": (2, None), "max": (2, None), "abs": (1, 1)}
FORMULA_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div)
FORMULA_UNARY = (ast.USub, ast.UAdd)
FORMULA_DEPTH = 64


class SpecBase(BaseModel):
    """Unknown keys and non-finite numbers are errors, as in every config section."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)


def _name(default: str) -> Any:
    # The name keys the grader's reward and error counts in the training metrics (reward_<name>).
    return Field(default, min_length=1, max_length=64, pattern=r"^[\w.-]+$")


def template_problem(text: str) -> str | None:
    """What is wrong with the {{...}} references of a template, or None."""
    for match in TEMPLATE.finditer(text):
        root, *path = match[1].split(".")
        known = (root == "item" and path and all(path)) or (root == "sample" and path == ["output_text"]) or (
            root == "sample" and path[:1] == ["output_json"] and all(path))
        if not known:
            return (f"unknown template reference {match[0]!r} (use {{{{sample.output_text}}}}, "
                    "{{sample.output_json.FIELD}} or {{item.FIELD}})")
    return None


def _check_template(text: str) -> str:
    problem = template_problem(text)
    if problem:
        raise ValueError(problem)
    return text


Template = Annotated[str, AfterValidator(_check_template)]


class StringCheckSpec(SpecBase):
    """1.0 when the rendered input and reference compare as `operation` says, else 0.0."""

    type: Literal["string_check"]
    name: str = _name("string_check")
    input: Template = SAMPLE_TEXT
    reference: Template = ITEM_REFERENCE
    # eq / ne: (in)equality; like: the reference is a substring of the input; ilike: the same, ignoring case.
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilaritySpec(SpecBase):
    """A similarity in [0, 1] between the rendered input and reference."""

    type: Literal["text_similarity"]
    name: str = _name("text_similarity")
    input: Template = SAMPLE_TEXT
    reference: Template = ITEM_REFERENCE
    # semantic: cosine of the MiniLM embeddings (negative cosines count as 0).
    evaluation_metric: Literal["fuzzy_match", "bleu", "chrf", "rouge_1", "rouge_2", "rouge_l", "semantic"]
    # Set: the score becomes 1.0 at or above it and 0.0 below (a pass/fail reward).
    pass_threshold: float | None = Field(None, ge=0, le=1)


class JsonSchemaSpec(SpecBase):
    """1.0 when the output parses as a JSON object (strictly: no prose or code fences) and satisfies the schema."""

    # `schema` would shadow a (deprecated) BaseModel method: the field is schema_, the YAML key `schema`.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    type: Literal["json_schema"]
    name: str = _name("json_schema")
    # None: the task's output_schema; when that is None too, parsing as a JSON object is the whole test.
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class MetricSpec(SpecBase):
    """A per-sample metric of tuneloop's metric registry (json_valid, schema_valid, category_accuracy,
    exact_match, rouge1, ...): the same number the evaluation reports, per answer."""

    type: Literal["metric"]
    name: str = _name("metric")
    metric: str = Field(min_length=1, max_length=200)


class PythonSpec(SpecBase):
    """`def grade(sample: dict, item: dict) -> float` (OpenAI's convention: sample = {"output_text": ...,
    "output_json": ...}, item = the row's fields), run in a child process with a per-sample timeout."""

    type: Literal["python"]
    name: str = _name("python")
    source: str | None = Field(None, min_length=1)
    # A .py file instead of `source`; relative to the config file.
    file: Path | None = None
    timeout_s: float = Field(10, gt=0, le=600)

    @field_validator("file", mode="after")
    @classmethod
    def _relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        base = (info.context or {}).get("base_dir")
        return path if path is None or path.is_absolute() or base is None else Path(base) / path

    @model_validator(mode="after")
    def _one_of_source_or_file(self) -> PythonSpec:
        if (self.source is None) == (self.file is None):
            raise ValueError("a python grader needs exactly one of `source` (code) or `file` (a .py file)")
        return self


class JudgeMessage(SpecBase):
    """One message of the judge's prompt; its content is a template over the sample and its row."""

    role: Literal["system", "developer", "user", "assistant"]
    content: Template = Field(min_length=1)


class ScoreModelSpec(SpecBase):
    """A judge model behind an OpenAI-compatible endpoint scores each answer; the first number of its
    reply, mapped from `range` to [0, 1], is the score."""

    type: Literal["score_model"]
    name: str = _name("score_model")
    model: str = Field(min_length=1)
    base_url: str = Field(pattern=r"^https?://\S+$")  # e.g. http://127.0.0.1:8000/v1
    # Environment variable holding the API key (sent as a Bearer token); None = no key.
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    input: list[JudgeMessage] = Field(min_length=1, max_length=64)
    range: tuple[float, float] = (0.0, 1.0)
    timeout_s: float = Field(60, gt=0, le=600)
    max_concurrency: int = Field(4, ge=1, le=64)
    temperature: float = Field(0.0, ge=0, le=2)

    @field_validator("range")
    @classmethod
    def _low_below_high(cls, bounds: tuple[float, float]) -> tuple[float, float]:
        if not bounds[0] < bounds[1]:
            raise ValueError("range must be [low, high] with low < high")
        return bounds


GraderKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class MultiSpec(SpecBase):
    """Several graders on the same answer, combined by a formula over their keys (default: the mean)."""

    type: Literal["multi"]
    name: str = _name("multi")
    graders: dict[GraderKey, GraderSpec] = Field(min_length=1, max_length=16)
    # Arithmetic over the keys: numbers, + - * /, unary -, parentheses, min(), max(), abs(),
    # e.g. "0.7 * category + 0.3 * min(json, schema)". None = the mean of the graders.
    calculate_output: str | None = Field(None, min_length=1, max_length=1000)

    @field_validator("graders")
    @classmethod
    def _keys_are_formula_names(cls, graders: dict[str, Any]) -> dict[str, Any]:
        for key in graders:
            if keyword.iskeyword(key) or key in FORMULA_CALLS:
                raise ValueError(f"grader key {key!r} is reserved in formulas; pick another")
        return graders

    @field_validator("calculate_output")
    @classmethod
    def _formula_is_safe(cls, formula: str | None, info: ValidationInfo) -> str | None:
        if formula is not None and "graders" in info.data:  # (bad graders are reported on their own)
            problem = formula_problem(formula, set(info.data["graders"]))
            if problem:
                raise ValueError(problem)
        return formula


def formula_problem(text: str, names: set[str]) -> str | None:
    """Why `text` is not a formula a multi grader may evaluate, or None. Only arithmetic on the
    sub-graders' keys passes: no attributes, subscripts, comparisons, strings or other calls."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as err:
        return f"not a formula ({err.msg})"
    if _depth(tree) > FORMULA_DEPTH:
        return f"nested more than {FORMULA_DEPTH} levels deep"
    callees = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Expression, ast.Load, *FORMULA_OPS, *FORMULA_UNARY)):
            continue
        if isinstance(node, ast.BinOp) and isinstance(node.op, FORMULA_OPS):
            continue
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, FORMULA_UNARY):
            continue
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            continue
        if isinstance(node, ast.Name):
            if node.id in FORMULA_CALLS and id(node) not in callees:
                return f"{node.id} must be called, as in {node.id}(a, b)"
            if node.id not in FORMULA_CALLS and node.id not in names:
                return f"unknown name {node.id!r} (the graders are: {', '.join(sorted(names))})"
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORMULA_CALLS:
            fewest, most = FORMULA_CALLS[node.func.id]
            if node.keywords or len(node.args) < fewest or (most is not None and len(node.args) > most):
                return f"{node.func.id}() takes {'one' if most == fewest else f'{fewest} or more'} plain argument(s)"
            continue
        what = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
        return f"{what!r} is not allowed (only numbers, grader keys, + - * /, parentheses, min, max, abs)"
    return None


def _depth(tree: ast.AST) -> int:
    """How deep the tree nests, without recursion (the evaluator in multi.py recurses; this bounds it)."""
    deepest, todo = 0, [(tree, 1)]
    while todo:
        node, depth = todo.pop()
        deepest = max(deepest, depth)
        todo.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


KINDS = {"string_check": StringCheckSpec, "text_similarity": TextSimilaritySpec, "json_schema": JsonSchemaSpec,
         "metric": MetricSpec, "python": PythonSpec, "score_model": ScoreModelSpec, "multi": MultiSpec}


def _by_type(value: Any, handler: Any) -> Any:
    """Name an unknown or missing `type` with the known ones, and drop the tag pydantic puts into
    error locations of a tagged union, so an error reads `reward.graders.a.operation`, the YAML path."""
    if isinstance(value, SpecBase):
        return handler(value)
    if not isinstance(value, dict):
        raise ValueError(f"a grader is a mapping with a `type` ({', '.join(KINDS)})")
    kind = value.get("type")
    if not isinstance(kind, str) or kind not in KINDS:
        said = f"unknown grader type {kind!r}" if "type" in value else "a grader needs a `type`"
        raise ValueError(f"{said} (known: {', '.join(KINDS)})")
    try:
        return handler(value)
    except ValidationError as err:
        details = [{"type": e["type"], "loc": e["loc"][1:] if e["loc"][:1] == (kind,) else e["loc"], "input": e["input"],
                    **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in err.errors()]
        try:
            untagged = ValidationError.from_exception_data(err.title, details)
        except (KeyError, TypeError, ValueError):  # an error kind it cannot rebuild: keep pydantic's own
            raise err from None
        raise untagged from None


GraderSpec = Annotated[
    StringCheckSpec | TextSimilaritySpec | JsonSchemaSpec | MetricSpec | PythonSpec | ScoreModelSpec | MultiSpec,
    Field(discriminator="type"),
    WrapValidator(_by_type),
]
MultiSpec.model_rebuild()
