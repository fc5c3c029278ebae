"""Drift detection: alike samples pass, shifted ones are flagged by the check that should catch them.

Texts come from a seeded generator of templated clauses, cut to a word count drawn from a given range,
so topic and length can be shifted independently. The real embedded MiniLM embeds them; a per-text
cache lets the tests share the reference sample's embeddings.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from tuneloop.config import DriftConfig
from tuneloop.errors import TuneloopError
from tuneloop.monitor.drift import detect_drift

WORDS = {
    "item": ["parcel", "package", "order", "shipment", "delivery", "box"],
    "place": ["door", "neighbour", "locker", "reception", "garage", "address"],
    "bill": ["invoice", "bill", "charge", "payment", "subscription", "receipt"],
    "card": ["visa", "mastercard", "debit", "credit", "paypal", "bank"],
    "meat": ["chicken", "lamb", "pork", "beef", "duck", "turkey"],
    "veg": ["carrots", "onions", "potatoes", "leeks", "garlic", "peppers"],
    "dish": ["stew", "risotto", "curry", "soup", "pie", "casserole"],
    "herb": ["thyme", "basil", "rosemary", "parsley", "sage", "oregano"],
}
TICKETS = [
    "my {item} number {n} has not arrived yet",
    "the courier left the {item} at the wrong {place}",
    "I was charged twice on my {card} card for {bill} {n}",
    "please refund the {bill} for the missing {item}",
    "tracking for {item} {n} has not moved for days",
    "why does my {bill} show {n} euros instead of the agreed price",
    "can you send the {item} to my {place} instead",
    "I need a copy of {bill} {n} for my accounts",
]
COOKING = [
    "how long should I roast the {meat} at {n} degrees",
    "can I swap the {veg} for {veg} in a {dish}",
    "should the {herb} go into the {dish} early or late",
    "what is the best way to brown {meat} before the {dish}",
    "do I peel the {veg} before they go in the oven",
    "how much {herb} would you add to a {dish} for six people",
    "is it safe to reheat {meat} {dish} the next day",
    "which wine goes with a {meat} and {veg} {dish}",
]
CATEGORIES = ["shipping", "billing", "returns", "account"]


def generate(templates: list[str], n: int, words: tuple[int, int], seed: int) -> list[str]:
    """`n` texts: random clauses from `templates`, joined and cut to a word count drawn uniformly from `words`."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        target, tokens = rng.randint(*words), []
        while len(tokens) < target:
            clause = rng.choice(templates)
            for slot, options in WORDS.items():
                while "{" + slot + "}" in clause:
                    clause = clause.replace("{" + slot + "}", rng.choice(options), 1)
            tokens += clause.replace("{n}", str(rng.randint(10, 9999))).split() + ["and"]
        texts.append(" ".join(tokens[:target]))
    return texts


def labels(n: int, shares: list[float], seed: int) -> list[str]:
    return random.Random(seed).choices(CATEGORIES, weights=shares, k=n)


N = 150
TICKET_LENGTH = (8, 30)
REFERENCE = generate(TICKETS, N, TICKET_LENGTH, seed=1)
SAME = generate(TICKETS, N, TICKET_LENGTH, seed=2)
LONG_COOKING = generate(COOKING, N, (60, 120), seed=3)
COOKING_SAME_LENGTH = generate(COOKING, N, TICKET_LENGTH, seed=4)
LONG_TICKETS = generate(TICKETS, N, (60, 120), seed=5)


@pytest.fixture(scope="module")
def embed():
    """The real embedded MiniLM, each distinct text embedded once per module."""
    from tuneloop.models.embed import embed as real_embed

    cache: dict[str, np.ndarray] = {}

    def cached(texts: list[str]) -> np.ndarray:
        missing = list(dict.fromkeys(text for text in texts if text not in cache))
        if missing:
            cache.update(zip(missing, real_embed(missing)))
        return np.stack([cache[text] for text in texts])

    return cached


def fired(report: dict) -> set[str]:
    return {check["name"] for check in report["checks"] if check["drift"]}


def check(report: dict, name: str) -> dict:
    return next(c for c in report["checks"] if c["name"] == name)


def test_a_fresh_sample_from_the_same_distribution_is_not_drift(embed):
    report = detect_drift(REFERENCE, SAME, embed=embed)
    assert report["verdict"] == "no drift" and report["drift"] is False, report
    assert fired(report) == set()
    assert [c["name"] for c in report["checks"]] == ["input_length", "embedding_domain_auc", "embedding_mean_distance"]
    assert check(report, "embedding_domain_auc")["statistic"] < 0.65
    assert check(report, "embedding_mean_distance")["statistic"] < 0.02
    assert (report["n_reference"], report["n_current"]) == (N, N)
    json.dumps(report)  # goes to disk and to the CLI as JSON


def test_longer_texts_on_another_topic_are_drift_on_every_check(embed):
    report = detect_drift(REFERENCE, LONG_COOKING, embed=embed)
    assert report["verdict"] == "drift" and report["drift"] is True
    assert fired(report) == {"input_length", "embedding_domain_auc", "embedding_mean_distance"}
    assert check(report, "input_length")["p_value"] < 1e-10
    assert check(report, "embedding_domain_auc")["statistic"] > 0.95


def test_a_topic_shift_at_equal_length_is_caught_by_the_embeddings_not_the_length(embed):
    report = detect_drift(REFERENCE, COOKING_SAME_LENGTH, embed=embed)
    assert report["verdict"] == "drift"
    assert "input_length" not in fired(report)
    assert "embedding_domain_auc" in fired(report)


def test_a_length_shift_on_the_same_topic_is_caught_by_the_length_test(embed):
    report = detect_drift(REFERENCE, LONG_TICKETS, embed=embed)
    assert report["verdict"] == "drift"
    assert "input_length" in fired(report)
    assert check(report, "input_length")["statistic"] > 0.9  # the length ranges do not overlap


def test_the_same_label_mix_is_not_drift_and_a_skewed_mix_is(embed):
    reference_labels = labels(N, [0.4, 0.3, 0.2, 0.1], seed=6)
    same = detect_drift(REFERENCE, SAME, embed=embed, reference_labels=reference_labels,
                        current_labels=labels(N, [0.4, 0.3, 0.2, 0.1], seed=7))
    assert same["verdict"] == "no drift", same
    assert check(same, "label_distribution")["statistic"] < 0.1

    skewed = detect_drift(REFERENCE, SAME, embed=embed, reference_labels=reference_labels,
                          current_labels=labels(N, [0.1, 0.2, 0.3, 0.4], seed=7))
    assert skewed["verdict"] == "drift"
    assert fired(skewed) == {"label_distribution"}  # the texts themselves did not move
    label_check = check(skewed, "label_distribution")
    assert label_check["statistic"] >= DriftConfig().label_psi and label_check["p_value"] < 0.01


def test_psi_matches_the_formula_and_survives_a_category_missing_on_one_side():
    reference_labels = ["a"] * 50 + ["b"] * 50
    current_labels = ["a"] * 80 + ["b"] * 10 + ["c"] * 10  # "c" never seen in the reference
    vectors = lambda texts: np.ones((len(texts), 4))  # noqa: E731 - embeddings are not under test here
    report = detect_drift(["x"] * 100, ["x"] * 100, embed=vectors,
                          reference_labels=reference_labels, current_labels=current_labels)
    psi = check(report, "label_distribution")["statistic"]
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5) + (0.1 - 1e-4) * np.log(0.1 / 1e-4)
    assert psi == pytest.approx(expected, rel=1e-6)


def test_labels_are_checked_only_when_both_sides_have_them(embed):
    only_reference = detect_drift(REFERENCE, SAME, embed=embed, reference_labels=labels(N, [1, 1, 1, 1], seed=8))
    all_none = detect_drift(REFERENCE, SAME, embed=embed, reference_labels=labels(N, [1, 1, 1, 1], seed=8),
                            current_labels=[None] * N)
    for report in (only_reference, all_none):
        assert "label_distribution" not in {c["name"] for c in report["checks"]}


def test_too_few_samples_gives_no_verdict_and_skips_the_model():
    def must_not_embed(texts):
        raise AssertionError("embedded texts although there were too few to judge")

    few = generate(COOKING, 29, (60, 120), seed=9)
    report = detect_drift(REFERENCE, few, embed=must_not_embed)
    assert report == {"drift": False, "verdict": "too few samples", "min_samples": 30, "n_reference": N, "n_current": 29, "checks": []}
    assert detect_drift(few, REFERENCE, embed=must_not_embed)["verdict"] == "too few samples"
    # min_samples comes from the config: 29 is enough when the user says so.
    assert detect_drift(REFERENCE, few, DriftConfig(min_samples=20), embed=lambda t: np.eye(len(t)))["verdict"] == "drift"


def test_both_samples_are_embedded_in_one_call_and_the_result_is_seeded():
    calls = []
    rng = np.random.default_rng(0)
    table = {text: rng.normal(size=8) for text in set(REFERENCE + SAME)}

    def recording(texts):
        calls.append(len(texts))
        return np.stack([table[text] for text in texts])

    first = detect_drift(REFERENCE, SAME, embed=recording, seed=3)
    assert calls == [2 * N]
    assert detect_drift(REFERENCE, SAME, embed=recording, seed=3) == first


def test_bad_inputs_raise_a_clear_error():
    with pytest.raises(TuneloopError, match="labels for"):
        detect_drift(REFERENCE, SAME, reference_labels=["a"], current_labels=["a"] * N)
    with pytest.raises(TuneloopError, match="list of strings"):
        detect_drift("one long text", SAME)
    with pytest.raises(TuneloopError, match="one row per text"):
        detect_drift(REFERENCE, SAME, embed=lambda texts: np.ones((3, 4)))
