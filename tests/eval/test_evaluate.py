"""Scoring of JSON answers, objective gates, and a full evaluation run on the tiny model."""

import json

import pytest

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.config import EvalConfig, ModelConfig, ObjectiveConfig, TaskConfig, TrainConfig, LoraConfig
from tuneloop.errors import TuneloopError
from tuneloop.eval.evaluate import check_gates, evaluate
from tuneloop.eval.metrics import aggregate, score
from tuneloop.train.trainer import train

TASK = TaskConfig(
    output_schema={"type": "object", "required": ["category"], "properties": {"category": {"enum": ["billing", "shipping"]}}},
    label_fields=["category"],
)
REF = '{"category": "billing", "priority": "high"}'


@pytest.mark.parametrize("prediction, expected", [
    ('{"priority": "high", "category": "billing"}', {"json_valid": 1, "schema_valid": 1, "category_accuracy": 1, "exact_match": 1}),
    ('{"category": "shipping"}', {"json_valid": 1, "schema_valid": 1, "category_accuracy": 0, "exact_match": 0}),
    ('{"category": "refunds"}', {"json_valid": 1, "schema_valid": 0, "category_accuracy": 0, "exact_match": 0}),
    ('```json\n{"category": "billing"}\n```', {"json_valid": 0, "schema_valid": 0, "category_accuracy": 0, "exact_match": 0}),
    ('["billing"]', {"json_valid": 0, "schema_valid": 0, "category_accuracy": 0, "exact_match": 0}),
])
def test_score(prediction, expected):
    assert score(prediction, REF, TASK) == expected


def test_aggregate_is_the_mean():
    assert aggregate([{"a": 1.0}, {"a": 0.0}, {"a": 1.0}, {"a": 1.0}]) == {"a": 0.75}


def test_gates_report_value_and_margin():
    objective = ObjectiveConfig.model_validate({"gates": {"json_valid": ">= 0.95", "exact_match": ">= 0.5"}})
    gates = check_gates(objective, {"json_valid": 0.9, "exact_match": 0.6})
    assert [(g["metric"], g["passed"]) for g in gates] == [("json_valid", False), ("exact_match", True)]
    assert gates[0]["margin"] == pytest.approx(-0.05)
    with pytest.raises(TuneloopError, match="objective.gates.f1: no such metric"):
        check_gates(ObjectiveConfig.model_validate({"gates": {"f1": ">= 0.5"}}), {"json_valid": 1.0})


def test_evaluate_compares_base_and_finetuned(tmp_path, tiny_model_dir):
    rows = ticket_rows(20)
    write_jsonl(tmp_path / "train.jsonl", rows[:16])
    write_jsonl(tmp_path / "test.jsonl", rows[16:])
    model = ModelConfig(name=str(tiny_model_dir))
    train(TrainConfig(max_steps=2, batch_size=4, lora=LoraConfig(r=4)), model, tmp_path, tmp_path / "train")
    objective = ObjectiveConfig.model_validate({"gates": {"json_valid": ">= 0.99"}})
    results = evaluate(EvalConfig(max_new_tokens=6), model, TASK, objective, tmp_path, tmp_path / "train" / "adapter", tmp_path / "eval")
    assert set(results["systems"]) == {"base", "finetuned"} and results["n_test"] == 4
    # A random tiny model cannot write JSON: the gate must fail, and say by how much.
    assert results["objective_passed"] is False and results["gates"][0]["value"] == 0.0
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and set(samples[0]["outputs"]) == {"base", "finetuned"}
    assert samples[0]["reference"] == rows[16]["messages"][-1]["content"]
    assert (tmp_path / "eval" / "metrics.png").is_file() and (tmp_path / "eval" / "manifest.json").is_file()


def test_a_full_fine_tune_is_evaluated_against_the_separately_loaded_base(tmp_path, tiny_model_dir):
    from tuneloop.models import trained_weights

    rows = ticket_rows(20)
    write_jsonl(tmp_path / "train.jsonl", rows[:16])
    write_jsonl(tmp_path / "test.jsonl", rows[16:])
    model = ModelConfig(name=str(tiny_model_dir))
    train(TrainConfig(method="full", max_steps=3, batch_size=8, learning_rate=1e-2, tensorboard=False), model, tmp_path, tmp_path / "train")
    weights = trained_weights(tmp_path / "train")
    assert weights.name == "model"
    evaluate(EvalConfig(max_new_tokens=6), model, TASK, ObjectiveConfig(), tmp_path, weights, tmp_path / "eval")
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert any(s["outputs"]["base"] != s["outputs"]["finetuned"] for s in samples)  # two different models answered
