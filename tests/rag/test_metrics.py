"""Retrieval metrics on constructed rankings, and groundedness with the real MiniLM."""

from __future__ import annotations

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.rag import groundedness, mrr, recall_at_k

RETRIEVED = [["a", "b", "c"], ["x", "y", "z"], ["q", "r", "s"]]
RELEVANT = [{"a"}, {"z", "w"}, {"nope"}]


def test_recall_at_k_is_the_share_of_relevant_ids_in_the_top_k():
    assert recall_at_k(RETRIEVED, RELEVANT, 1) == pytest.approx((1 + 0 + 0) / 3)
    assert recall_at_k(RETRIEVED, RELEVANT, 3) == pytest.approx((1 + 0.5 + 0) / 3)
    assert recall_at_k([["b", "a"]], [{"a"}], 1) == 0.0


def test_mrr_uses_the_first_relevant_rank():
    assert mrr(RETRIEVED, RELEVANT) == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert mrr([["b", "a", "a"]], [{"a"}]) == 0.5


def test_metric_inputs_are_checked():
    with pytest.raises(TuneloopError, match="one per query"):
        mrr([["a"]], [{"a"}, {"b"}])
    with pytest.raises(TuneloopError, match="query 1 has no relevant ids"):
        recall_at_k([["a"], ["b"]], [{"a"}, set()], 1)
    with pytest.raises(TuneloopError, match="k >= 1"):
        recall_at_k([["a"]], [{"a"}], 0)


CONTEXT = ["If the dishwasher shows error E-1042, the drain pump is blocked. Remove the filter at the bottom of the tub "
           "and rinse it under the tap.", "Orders placed before 2 pm ship the same working day."]


def test_groundedness_of_answers_copied_from_unrelated_to_and_half_from_the_context():
    copied = "Error E-1042 means the drain pump is blocked. Remove the filter at the bottom of the tub and rinse it under the tap."
    unrelated = "The Roman Empire split into eastern and western halves. Its last emperor in the west was deposed in 476."
    assert groundedness(copied, CONTEXT) == 1.0
    assert groundedness(unrelated, CONTEXT) == 0.0
    assert groundedness(copied.split(". ")[0] + ". " + unrelated.split(". ")[0] + ".", CONTEXT) == 0.5
    assert groundedness("", CONTEXT) is None and groundedness("   ", CONTEXT) is None
    assert groundedness(copied, []) == 0.0


def test_groundedness_threshold_and_embedder_are_parameters():
    calls = []

    def fake(texts):
        import numpy as np

        calls.append(texts)
        return np.array([[1.0, 0.0] if "pump" in t else [0.6, 0.8] for t in texts])  # cosine 0.6 across

    assert groundedness("The pump. Other words.", ["pump only"], embed=fake) == 1.0  # 0.6 >= 0.6
    assert groundedness("The pump. Other words.", ["pump only"], threshold=0.7, embed=fake) == 0.5
    assert calls and calls[0][:2] == ["The pump.", "Other words."]
