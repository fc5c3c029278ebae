"""General-capability regression: perplexity by hand, and the local lm-eval task runs offline."""

import math

import pytest
import torch

from tuneloop.eval.regression import general_capability, perplexity, switch_for
from tuneloop.models import load_model


def test_perplexity_is_exp_of_the_mean_token_loss(tokenizer, tiny_model_dir):
    model = load_model(tiny_model_dir)
    text = "The parcel arrived late.\n\nBees make honey in summer."
    losses = []
    for paragraph in text.split("\n\n"):
        ids = tokenizer(paragraph, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        losses += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none").tolist()
    assert perplexity(model, tokenizer, text) == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-4)


def test_general_capability_compares_base_and_finetuned_offline(tokenizer, tiny_model_dir):
    base = load_model(tiny_model_dir)
    tuned = load_model(tiny_model_dir)
    with torch.no_grad():
        tuned.model.layers[0].mlp.down_proj.weight.mul_(3.0)  # a different model, same shape
    result = general_capability({"base": base, "finetuned": tuned}, tokenizer, switch_for(False, base))
    for system in ("base", "finetuned"):
        scores = result["systems"][system]
        assert scores["perplexity"] > 1 and 0 <= scores["general_mc_acc"] <= 1
    assert result["perplexity_change"] == pytest.approx(result["systems"]["finetuned"]["perplexity"] / result["systems"]["base"]["perplexity"] - 1)
    assert result["systems"]["finetuned"]["perplexity"] != result["systems"]["base"]["perplexity"]
