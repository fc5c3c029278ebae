"""The reward of an objective: `objective.reward` when written, else the gates as a mean of per-sample
metric graders, checked on the ticket-triage example and its rows."""

import json

import pytest

from tests.conftest import ROOT, ticket_rows
from tuneloop.config import ObjectiveConfig, load_config, parse_config
from tuneloop.errors import TuneloopError
from tuneloop.graders.build import build_grader, reward_spec
from tuneloop.graders.specs import MetricSpec, MultiSpec, StringCheckSpec

TRIAGE = load_config(ROOT / "examples" / "ticket_triage" / "pipeline.yaml")


def items(rows: list[dict]) -> list[dict]:
    """What the trainer hands a grader per row: the answer as reference, the last user message as input."""
    return [{"reference": r["messages"][-1]["content"], "input": r["messages"][-2]["content"], "messages": r["messages"][:-1]} for r in rows]


def test_the_triage_gates_become_the_mean_of_their_metrics():
    spec = reward_spec(TRIAGE.objective, TRIAGE.task)
    assert isinstance(spec, MultiSpec) and spec.name == "gates" and spec.calculate_output is None
    assert spec.graders == {key: MetricSpec(type="metric", name=key, metric=key) for key in ("json_valid", "schema_valid", "category_accuracy")}
    rows = ticket_rows(4)
    right = [r["messages"][-1]["content"] for r in rows]
    wrong_category = json.dumps({**json.loads(right[1]), "category": "billing" if "billing" not in right[1] else "account"})
    off_schema = json.dumps({**json.loads(right[2]), "mood": "grumpy"})  # additionalProperties: false
    outputs = [right[0], wrong_category, off_schema, "Sure! Here is the JSON: " + right[3]]
    grades = build_grader(spec, TRIAGE.task).grade(outputs, items(rows))
    assert grades.parts == {"json_valid": [1, 1, 1, 0], "schema_valid": [1, 1, 0, 0], "category_accuracy": [1, 0, 1, 0]}
    assert grades.total == [pytest.approx(v) for v in (1, 2 / 3, 2 / 3, 0)]
    assert sum(grades.errors.values()) == 0 and grades.messages == []


def test_lower_is_better_gates_count_as_one_minus_and_system_or_corpus_gates_are_left_out():
    objective = ObjectiveConfig(gates={"json_valid": ">= 0.9", "refusal": "<= 0.05", "json_valid@base": ">= 0.1",
                                       "category.f1_macro": ">= 0.8", "category_accuracy: finetuned - base": "> 0"})
    spec = reward_spec(objective, TRIAGE.task)
    assert list(spec.graders) == ["json_valid", "refusal"] and spec.calculate_output == "(json_valid + (1 - refusal)) / 2"
    grades = build_grader(spec, TRIAGE.task).grade(['{"a": 1}', "I'm sorry, I can't help with that.", "plain"], [{"reference": "{}"}] * 3)
    assert grades.total == [1.0, 0.0, 0.5]


def test_no_usable_gate_says_which_were_skipped_and_why():
    objective = ObjectiveConfig(gates={"category.f1_macro": ">= 0.8", "bleu": ">= 20", "json_valid@base": ">= 0.5", "latency": "< 2"})
    with pytest.raises(TuneloopError) as caught:
        reward_spec(objective, TRIAGE.task)
    message = str(caught.value)
    assert message.startswith("objective.reward: none of the gates is a per-sample metric")
    assert "category.f1_macro (a corpus metric, no per-sample value)" in message and "bleu (a corpus metric" in message
    assert "json_valid@base (compares systems)" in message and "latency (not a per-sample metric of this task)" in message
    assert message.endswith("write objective.reward (see README)")
    with pytest.raises(TuneloopError, match="there are no gates"):
        reward_spec(ObjectiveConfig(), TRIAGE.task)


def test_a_written_reward_wins_over_the_gates():
    cfg = parse_config({"objective": {"gates": {"json_valid": ">= 0.9"},
                                      "reward": {"type": "string_check", "operation": "ilike", "reference": "{{item.label}}"}}})
    spec = reward_spec(cfg.objective, cfg.task)
    assert isinstance(spec, StringCheckSpec)
    assert build_grader(spec, cfg.task).grade(["It is BILLING", "shipping"], [{"label": "billing"}] * 2).total == [1.0, 0.0]
