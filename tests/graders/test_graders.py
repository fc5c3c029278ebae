"""Each in-process grader type on real answers: string_check, text_similarity, json_schema, metric, multi;
and the templates they render."""

import json

import pytest
from pydantic import TypeAdapter

from tuneloop.config import TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.graders.build import build_grader
from tuneloop.graders.specs import GraderSpec
from tuneloop.graders.templates import render, scope

SPEC = TypeAdapter(GraderSpec)
TASK = TaskConfig(
    output_schema={"type": "object", "required": ["category"], "properties": {"category": {"enum": ["billing", "shipping"]}}},
    label_fields=["category"],
)
REF = json.dumps({"category": "billing", "priority": "high"})


def grade(spec: dict, outputs: list[str], items: list[dict] | None = None, task: TaskConfig = TASK):
    grader = build_grader(SPEC.validate_python(spec), task)
    return grader.grade(outputs, items if items is not None else [{"reference": REF} for _ in outputs])


def test_templates_render_sample_item_and_nested_fields():
    names = scope('{"category": "billing", "n": 3, "tags": ["a"]}', {"reference": "r", "meta": {"lang": "de"}, "messages": [{"content": "hi"}]})
    assert render("{{sample.output_json.category}}/{{ item.meta.lang }}/{{item.messages.0.content}}", names) == "billing/de/hi"
    assert render("{{sample.output_json.n}} {{sample.output_json.tags}}", names) == '3 ["a"]'
    assert render("[{{item.nothing}}][{{sample.output_json.missing.deeper}}][{{item.messages.7}}]", names) == "[][][]"
    assert render("{{sample.output_json.category}}", scope("not json", {})) == ""


@pytest.mark.parametrize("operation, expected", [("eq", [1, 0, 0, 0]), ("ne", [0, 1, 1, 1]), ("like", [1, 1, 0, 0]), ("ilike", [1, 1, 1, 0])])
def test_string_check_operations(operation, expected):
    outputs = ["billing", "billing dept", "BILLING", "shipping"]
    grades = grade({"type": "string_check", "operation": operation}, outputs, [{"reference": "billing"}] * 4)
    assert grades.total == expected and grades.parts == {"string_check": expected} and grades.errors == {"string_check": 0}


def test_string_check_on_a_json_field_against_a_row_field():
    spec = {"type": "string_check", "name": "category", "operation": "eq", "input": "{{sample.output_json.category}}", "reference": "{{item.label}}"}
    grades = grade(spec, ['{"category": "billing"}', '{"category": "shipping"}', "billing"], [{"label": "billing"}] * 3)
    assert grades.total == [1.0, 0.0, 0.0] and list(grades.parts) == ["category"]


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "chrf", "rouge_1", "rouge_2", "rouge_l"])
def test_text_similarity_orders_answers_and_stays_in_unit_range(metric):
    reference = "the parcel never arrived at my house"
    outputs = [reference, "the parcel never arrived at the office", "zz qq"]
    scores = grade({"type": "text_similarity", "evaluation_metric": metric}, outputs, [{"reference": reference}] * 3).total
    assert scores[0] == pytest.approx(1.0) and 0 < scores[1] < 1 and scores[2] < scores[1]
    assert all(0 <= s <= 1 for s in scores)


def test_text_similarity_hand_computed_values_and_threshold():
    # difflib: 2 * 3 matching characters / 8 characters; rouge-1 on Unicode words: P = R = 2/3.
    assert grade({"type": "text_similarity", "evaluation_metric": "fuzzy_match"}, ["abcd"], [{"reference": "abce"}]).total == [pytest.approx(0.75)]
    assert grade({"type": "text_similarity", "evaluation_metric": "rouge_1"}, ["größe ändert sich"], [{"reference": "größe bleibt sich"}]).total == [pytest.approx(2 / 3)]
    spec = {"type": "text_similarity", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.8}
    assert grade(spec, ["abcd", "abce"], [{"reference": "abce"}] * 2).total == [0.0, 1.0]


@pytest.mark.slow
def test_text_similarity_semantic_with_minilm():
    reference = "My package has not been delivered."
    outputs = [reference, "The parcel never arrived.", "What a lovely sunny afternoon for a picnic."]
    scores = grade({"type": "text_similarity", "evaluation_metric": "semantic"}, outputs, [{"reference": reference}] * 3).total
    assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[1] > scores[2] and all(0 <= s <= 1 for s in scores)


def test_json_schema_grader_own_schema_task_schema_or_parse_only():
    outputs = ['{"category": "billing"}', '{"category": "refunds"}', '```json\n{"category": "billing"}\n```', '["billing"]']
    assert grade({"type": "json_schema"}, outputs).total == [1, 0, 0, 0]  # the task's output_schema
    assert grade({"type": "json_schema"}, outputs, task=TaskConfig()).total == [1, 1, 0, 0]  # no schema: parses as an object
    own = {"type": "json_schema", "schema": {"type": "object", "required": ["priority"]}}
    assert grade(own, outputs + ['{"priority": 1}']).total == [0, 0, 0, 0, 1]
    with pytest.raises(TuneloopError, match="not a valid JSON schema"):
        grade({"type": "json_schema", "schema": {"type": "nonsense"}}, [])


def test_metric_grader_scores_each_answer_as_the_evaluation_would():
    outputs = [REF, '{"category": "billing"}', '{"category": "refunds"}', "not json"]
    assert grade({"type": "metric", "metric": "category_accuracy"}, outputs).total == [1, 1, 0, 0]
    assert grade({"type": "metric", "metric": "schema_valid"}, outputs).total == [1, 1, 0, 0]
    assert grade({"type": "metric", "metric": "exact_match"}, outputs).total == [1, 0, 0, 0]
    rouge = grade({"type": "metric", "metric": "rouge1"}, ["a b c"], [{"reference": "a b d"}]).total
    assert rouge == [pytest.approx(2 / 3)]


def test_metric_grader_refuses_unknown_and_corpus_metrics():
    with pytest.raises(TuneloopError, match=r"unknown metric 'jsn_valid'; per-sample metrics for this task: .*category_accuracy.*json_valid.*schema_valid"):
        grade({"type": "metric", "metric": "jsn_valid"}, [])
    with pytest.raises(TuneloopError, match="'f1_macro' is a corpus metric.*no per-sample value"):
        grade({"type": "metric", "metric": "f1_macro"}, [])
    with pytest.raises(TuneloopError, match="'bleu' is a corpus metric"):
        grade({"type": "metric", "metric": "bleu"}, [])
    with pytest.raises(TuneloopError, match="unknown metric 'schema_valid'"):  # no output schema in this task
        grade({"type": "metric", "metric": "schema_valid"}, [], task=TaskConfig())


def test_multi_with_a_formula_keeps_each_part_and_names_subgraders_by_key():
    spec = {"type": "multi", "calculate_output": "0.75 * cat + 0.25 * min(json, 1 - empty)", "graders": {
        "cat": {"type": "metric", "metric": "category_accuracy"},
        "json": {"type": "json_schema"},
        "empty": {"type": "string_check", "operation": "eq", "reference": ""},
    }}
    grades = grade(spec, [REF, '{"category": "shipping"}', ""])
    assert grades.total == [pytest.approx(1.0), pytest.approx(0.25), pytest.approx(0.0)]
    assert grades.parts == {"cat": [1, 0, 0], "json": [1, 1, 0], "empty": [0, 0, 1]}
    assert grades.errors == {"cat": 0, "json": 0, "empty": 0, "multi": 0}


def test_multi_default_is_the_mean_and_a_failing_formula_is_a_counted_error():
    two = {"a": {"type": "string_check", "operation": "like", "reference": "x"}, "b": {"type": "string_check", "operation": "like", "reference": "y"}}
    assert grade({"type": "multi", "graders": two}, ["xy", "x", "z"]).total == [1.0, 0.5, 0.0]
    grades = grade({"type": "multi", "name": "ratio", "graders": two, "calculate_output": "a / b"}, ["xy", "x"])
    assert grades.total == [1.0, 0.0] and grades.errors["ratio"] == 1
    assert grades.messages == ["multi grader 'ratio': sample 1: calculate_output: ZeroDivisionError: float division by zero"]
