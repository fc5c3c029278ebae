"""Grader specs in the pipeline config: errors name the YAML path, formulas and templates are checked
when the config loads."""

import pytest

from tuneloop.config import parse_config
from tuneloop.errors import TuneloopError
from tuneloop.graders.specs import MultiSpec, PythonSpec, StringCheckSpec


def reward(spec: dict):
    return parse_config({"objective": {"reward": spec}}).objective.reward


def fails(spec: dict) -> str:
    with pytest.raises(TuneloopError) as caught:
        reward(spec)
    return str(caught.value)


def multi(**graders) -> dict:
    return {"type": "multi", "graders": graders or {"a": {"type": "string_check", "operation": "eq"}}}


def test_a_reward_parses_into_its_spec_with_defaults():
    spec = reward(multi(a={"type": "string_check", "operation": "like"}, b={"type": "json_schema", "schema": {"type": "object"}}))
    assert isinstance(spec, MultiSpec) and isinstance(spec.graders["a"], StringCheckSpec)
    assert spec.graders["a"].input == "{{sample.output_text}}" and spec.graders["a"].reference == "{{item.reference}}"
    assert spec.graders["b"].schema_ == {"type": "object"}
    assert spec.graders["b"].model_dump()["schema"] == {"type": "object"}  # dumped under its YAML key
    assert parse_config({}).objective.reward is None


def test_unknown_grader_type_names_the_path_and_the_known_types():
    message = fails({"type": "nope"})
    assert message.startswith("config: objective.reward: unknown grader type 'nope' (known: string_check, text_similarity,")
    assert "multi" in message
    assert "objective.reward.graders.x: unknown grader type 'q'" in fails(multi(x={"type": "q"}))
    assert "objective.reward: a grader needs a `type`" in fails({"operation": "eq"})


def test_nested_errors_read_as_the_yaml_path():
    assert "objective.reward.graders.a.operation: must be 'eq', 'ne', 'like' or 'ilike', got 'is'" in fails(
        multi(a={"type": "string_check", "operation": "is"}))
    assert "objective.reward.graders.a.graders.b.timeout_s: must be <= 600" in fails(
        multi(a=multi(b={"type": "python", "source": "x", "timeout_s": 601})))
    assert "objective.reward.graders.a.opration: unknown key" in fails(
        multi(a={"type": "string_check", "operation": "eq", "opration": "eq"}))
    assert "objective.reward.graders.a: a python grader needs exactly one of `source`" in fails(multi(a={"type": "python"}))


@pytest.mark.parametrize("formula, problem", [
    ("__import__('os').system('true')", "is not allowed"),
    ("a.__class__", "is not allowed"),
    ("a ** 2", "is not allowed"),
    ("a if b else 0", "is not allowed"),
    ("'1' + a", "is not allowed"),
    ("c + a", "unknown name 'c'"),
    ("min + a", "min must be called"),
    ("min(a)", "min() takes 2 or more"),
    ("abs(a, b)", "abs() takes one"),
    ("(" * 40 + "a" + ")" * 40 + " + " + "-" * 70 + "b", "nested more than"),
    ("a +", "not a formula"),
])
def test_unsafe_or_broken_formulas_are_refused_when_the_config_loads(formula, problem):
    message = fails({**multi(a={"type": "string_check", "operation": "eq"}, b={"type": "string_check", "operation": "ne"}),
                     "calculate_output": formula})
    assert "objective.reward.calculate_output: " in message and problem in message


def test_bounds_keys_and_templates_are_checked():
    assert "objective.reward.pass_threshold: must be <= 1" in fails(
        {"type": "text_similarity", "evaluation_metric": "bleu", "pass_threshold": 1.5})
    assert "objective.reward.range: range must be [low, high] with low < high" in fails(
        {"type": "score_model", "model": "m", "base_url": "http://x/v1", "input": [{"role": "user", "content": "x"}], "range": [1, 0]})
    assert "objective.reward.max_concurrency: must be >= 1" in fails(
        {"type": "score_model", "model": "m", "base_url": "http://x/v1", "input": [{"role": "user", "content": "x"}], "max_concurrency": 0})
    assert "unknown template reference '{{sample.output}}'" in fails({"type": "string_check", "operation": "eq", "input": "{{sample.output}}"})
    assert "objective.reward.input.0.content: unknown template reference '{{answer}}'" in fails(
        {"type": "score_model", "model": "m", "base_url": "http://x/v1", "input": [{"role": "user", "content": "{{answer}}"}]})
    assert "reserved in formulas" in fails(multi(min={"type": "string_check", "operation": "eq"}))
    assert "objective.reward.graders" in fails({"type": "multi", "graders": {}})
    assert "must be a finite number" in fails({"type": "text_similarity", "evaluation_metric": "bleu", "pass_threshold": float("nan")})


def test_python_file_is_relative_to_the_config_file(tmp_path):
    spec = parse_config({"objective": {"reward": {"type": "python", "file": "g.py"}}}, base_dir=tmp_path).objective.reward
    assert isinstance(spec, PythonSpec) and spec.file == tmp_path / "g.py"
