"""Every metric against hand-computed values; bootstrap intervals; gates."""

import numpy as np
import pytest

from tuneloop.config import ObjectiveConfig, TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.metrics import Context, mean_scores, score_corpus, score_samples
from tuneloop.metrics.labels import confusion_tables
from tuneloop.eval.scoring import check_gates
from tuneloop.eval.stats import paired_bootstrap

TASK = TaskConfig(
    output_schema={"type": "object", "required": ["category"], "properties": {"category": {"enum": ["billing", "shipping"]}}},
    label_fields=["category"],
)
CTX = Context(TASK)
REF = '{"category": "billing", "priority": "high"}'


def one(prediction: str, reference: str = REF, ctx: Context = CTX) -> dict:
    return score_samples([prediction], [reference], ctx)[0]


@pytest.mark.parametrize("prediction, expected", [
    ('{"priority": "high", "category": "billing"}', {"json_valid": 1, "schema_valid": 1, "category_accuracy": 1, "exact_match": 1}),
    ('{"category": "shipping"}', {"json_valid": 1, "schema_valid": 1, "category_accuracy": 0, "exact_match": 0}),
    ('{"category": "refunds"}', {"json_valid": 1, "schema_valid": 0, "category_accuracy": 0, "exact_match": 0}),
    ('```json\n{"category": "billing"}\n```', {"json_valid": 0, "schema_valid": 0, "category_accuracy": 0, "exact_match": 0}),
    ('["billing"]', {"json_valid": 0, "schema_valid": 0, "category_accuracy": 0, "exact_match": 0}),
])
def test_structure(prediction, expected):
    scores = one(prediction)
    assert {k: scores[k] for k in expected} == expected


def test_classification_against_hand_computed_precision_recall_f1():
    refs = ['{"category": "billing"}', '{"category": "billing"}', '{"category": "shipping"}', '{"category": "shipping"}']
    preds = ['{"category": "billing"}', '{"category": "shipping"}', '{"category": "shipping"}', "not json"]
    scores = score_corpus(preds, refs, CTX)
    # billing: P 1/1, R 1/2, F1 2/3. shipping: P 1/2, R 1/2, F1 1/2. "not json" predicts (invalid).
    assert scores["category.accuracy"] == pytest.approx(2 / 4)
    assert scores["category.precision_macro"] == pytest.approx((1 + 0.5) / 2)
    assert scores["category.recall_macro"] == pytest.approx((0.5 + 0.5) / 2)
    assert scores["category.f1.billing"] == pytest.approx(2 / 3)
    assert scores["category.f1.shipping"] == pytest.approx(0.5)
    assert scores["category.f1_macro"] == pytest.approx((2 / 3 + 0.5) / 2)
    table = confusion_tables({"a": preds}, refs, "category")
    assert table["labels"] == ["billing", "shipping", "(invalid)"]
    assert table["confusion"]["a"] == [[1, 1, 0], [0, 1, 1], [0, 0, 0]]


def test_bleu_and_chrf_bounds():
    same = score_corpus(["the parcel never arrived"], ["the parcel never arrived"], Context())
    assert same["bleu"] == pytest.approx(100) and same["chrf"] == pytest.approx(100)
    other = score_corpus(["xyz qqq"], ["the parcel never arrived"], Context())
    assert other["bleu"] == pytest.approx(0) and other["chrf"] < 10


def test_rouge_hand_computed_and_unicode():
    scores = one("the cat", "the cat sat", Context())
    # unigrams: P 2/2, R 2/3 -> F 0.8; bigrams: P 1/1, R 1/2 -> F 2/3; LCS 2 -> F 0.8
    assert scores["rouge1"] == pytest.approx(0.8) and scores["rouge2"] == pytest.approx(2 / 3) and scores["rougeL"] == pytest.approx(0.8)
    # The default rouge-score tokenizer drops non-ASCII letters: "größe" would not match itself.
    assert one("Größe überall gleich", "größe überall gleich", Context())["rouge1"] == pytest.approx(1.0)
    assert one("доставка задерживается", "доставка задерживается", Context())["rougeL"] == pytest.approx(1.0)


def test_semantic_similarity_orders_paraphrases_above_unrelated_text():
    same = one("My parcel has not arrived yet", "My parcel has not arrived yet", Context())["semantic_similarity"]
    close = one("My package still hasn't been delivered", "My parcel has not arrived yet", Context())["semantic_similarity"]
    far = one("The printer ink is smudged", "My parcel has not arrived yet", Context())["semantic_similarity"]
    assert same == pytest.approx(1.0, abs=1e-5) and close > far + 0.2


def test_behaviour_metrics():
    assert one("   ", "x", Context())["empty"] == 1.0
    assert one("I'm sorry, but I can't help with that.", "x", Context())["refusal"] == 1.0
    assert one("Sorry to hear that! Category: billing", "x", Context())["refusal"] == 0.0
    assert one("abcde", "x", Context())["length_chars"] == 5.0
    assert mean_scores([{"a": 1.0}, {"a": 0.0}, {"a": 1.0}, {"a": 1.0}]) == {"a": 0.75}


def test_bootstrap_interval_and_paired_difference():
    rng = np.random.default_rng(1)
    coin = [{"hit": float(v)} for v in rng.random(400) < 0.5]
    better = [{"hit": 1.0 if i % 4 else row["hit"]} for i, row in enumerate(coin)]  # same examples, 3/4 fixed
    intervals, differences = paired_bootstrap({"finetuned": better, "base": coin}, lambda s, idx: {}, "finetuned", resamples=2000)
    low, high = intervals["base"]["hit"]
    mean = np.mean([r["hit"] for r in coin])
    assert low < mean < high and 0.07 < high - low < 0.13  # ~ 2 x 1.96 x sqrt(.25 / 400) = 0.098
    d_low, d_high = differences["base"]["hit"]
    assert d_low > 0 and d_high - d_low < high - low  # pairing makes the difference tighter than either interval
    constant = paired_bootstrap({"a": [{"x": 0.5}] * 10}, lambda s, idx: {}, "a")[0]
    assert constant["a"]["x"] == [0.5, 0.5]


def test_gates_pass_fail_on_systems_and_differences():
    systems = {"finetuned": {"json_valid": 0.9, "exact_match": 0.6, "category.f1_macro": 0.85}, "base": {"json_valid": 0.1, "exact_match": 0.2}}
    objective = ObjectiveConfig.model_validate({"gates": {
        "json_valid": ">= 0.95", "category.f1_macro": ">= 0.8", "exact_match: finetuned - base": "> 0.3", "json_valid@base": "< 0.5"}})
    gates = {g["metric"]: g for g in check_gates(objective, systems, "finetuned")}
    assert gates["json_valid"]["passed"] is False and gates["json_valid"]["margin"] == pytest.approx(-0.05)
    assert gates["category.f1_macro"]["passed"] is True
    assert gates["exact_match: finetuned - base"]["value"] == pytest.approx(0.4) and gates["exact_match: finetuned - base"]["passed"]
    assert gates["json_valid@base"]["passed"] is True
    with pytest.raises(TuneloopError, match="objective.gates.f1: no such metric"):
        check_gates(ObjectiveConfig.model_validate({"gates": {"f1": ">= 0.5"}}), systems, "finetuned")
    with pytest.raises(TuneloopError, match="system 'rag' was not evaluated"):
        check_gates(ObjectiveConfig.model_validate({"gates": {"json_valid: finetuned - rag": "> 0"}}), systems, "finetuned")
