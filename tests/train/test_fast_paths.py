"""The fast training paths compute what the plain peft/transformers path computes (fp32 tolerance).

Fast paths: fused LoRA layers (fast_lora.py), the chunked answer-token loss and the mask-free
right-padded batches (loss.py). Each is compared with the plain computation on a tiny Llama.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

from tests.conftest import ticket_rows
from tuneloop.models import encode_chat, load_model
from tuneloop.train import fast_lora, loss
from tuneloop.train.batching import collate
from tuneloop.train.fast_lora import LoraFunction, keep_mask, use_fast_lora
from tuneloop.train.loss import ChunkedNll, answer_logps, answer_loss_sum


def _batch(tokenizer, n: int = 6) -> dict:
    examples = [encode_chat(tokenizer, r["messages"], 128) for r in ticket_rows(n)]
    examples[0].input_ids[:] = examples[0].input_ids[: len(examples[0].input_ids) // 2]  # uneven lengths: real padding
    examples[0].labels[:] = examples[0].labels[: len(examples[0].input_ids)]
    examples[0].labels[-3:] = examples[0].input_ids[-3:]
    return collate(examples, tokenizer.pad_token_id)


def _lora_model(tiny_model_dir, dropout: float = 0.0):
    torch.manual_seed(0)
    config = PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules="all-linear", init_lora_weights=False)
    return get_peft_model(load_model(tiny_model_dir), config).train()


def _loss_and_grads(model, batch, fast: bool) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    total, n = answer_loss_sum(model, batch, fast=fast)
    (total / n).backward()
    return total.item() / n, {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_fast_lora_step_equals_the_plain_peft_step(tokenizer, tiny_model_dir):
    plain = _lora_model(tiny_model_dir)
    fast = copy.deepcopy(plain)
    assert use_fast_lora(fast) == 2 * 7  # q k v o gate up down in each of the two layers
    batch = _batch(tokenizer)
    loss_plain, grads_plain = _loss_and_grads(plain, batch, fast=False)
    loss_fast, grads_fast = _loss_and_grads(fast, batch, fast=True)
    assert loss_fast == pytest.approx(loss_plain, rel=1e-5)
    assert grads_plain.keys() == grads_fast.keys() and len(grads_plain) == 2 * 2 * 7
    for name in grads_plain:
        torch.testing.assert_close(grads_fast[name], grads_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_full_fine_tuning_fast_loss_equals_plain_including_the_tied_head(tokenizer, tiny_model_dir):
    plain = load_model(tiny_model_dir).train()
    for p in plain.parameters():
        p.requires_grad_(True)
    fast = copy.deepcopy(plain)
    batch = _batch(tokenizer)
    loss_plain, grads_plain = _loss_and_grads(plain, batch, fast=False)
    loss_fast, grads_fast = _loss_and_grads(fast, batch, fast=True)
    assert loss_fast == pytest.approx(loss_plain, rel=1e-5)
    assert "model.embed_tokens.weight" in grads_fast  # the tied head's gradient arrives through the chunked loss
    for name in grads_plain:
        torch.testing.assert_close(grads_fast[name], grads_plain[name], rtol=1e-4, atol=1e-6, msg=name)


def test_dpo_log_probabilities_match_the_plain_path(tokenizer, tiny_model_dir):
    model = _lora_model(tiny_model_dir)
    batch = _batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(answer_logps(model, batch, fast=True), answer_logps(model, batch, fast=False), rtol=1e-5, atol=1e-4)


def test_lora_function_with_dropout_equals_the_reference_for_the_same_mask(monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, requires_grad=True)
    weight, bias = torch.randn(6, 8), torch.randn(6)
    a, b = torch.randn(4, 8, requires_grad=True), torch.randn(6, 4, requires_grad=True)
    keep, scale = keep_mask(x.shape, 0.3, x.device)
    monkeypatch.setattr(fast_lora, "keep_mask", lambda *_: (keep, scale))
    fused = LoraFunction.apply(x, weight, bias, a, b, 2.0, 0.3)
    reference = F.linear(x, weight, bias) + F.linear(F.linear(x * keep * scale, a), b) * 2.0
    torch.testing.assert_close(fused, reference)
    upstream = torch.randn_like(fused)
    got = torch.autograd.grad(fused, (x, a, b), upstream)
    want = torch.autograd.grad(reference, (x, a, b), upstream)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_lora_function_gradients_pass_gradcheck():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, dtype=torch.double, requires_grad=True)
    weight, bias = torch.randn(4, 5, dtype=torch.double), torch.randn(4, dtype=torch.double)
    a = torch.randn(2, 5, dtype=torch.double, requires_grad=True)
    b = torch.randn(4, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, b: LoraFunction.apply(x, weight, bias, a, b, 0.5, 0.0), (x, a, b))


def test_dropout_mask_keeps_one_minus_p_and_differs_every_call():
    first, scale = keep_mask(torch.Size([1000, 1000]), 0.05, torch.device("cpu"))
    second, _ = keep_mask(torch.Size([1000, 1000]), 0.05, torch.device("cpu"))
    assert abs(first.float().mean().item() - 0.95) < 0.002
    assert scale == pytest.approx(1 / 0.95, rel=1e-4)
    assert (first != second).float().mean().item() > 0.05  # independent draws, not one fixed mask


def test_fast_lora_leaves_evaluation_and_inference_to_peft(tokenizer, tiny_model_dir):
    model = _lora_model(tiny_model_dir, dropout=0.5)
    use_fast_lora(model)
    batch = _batch(tokenizer)
    model.eval()
    with torch.no_grad():
        first, second = answer_loss_sum(model, batch)[0], answer_loss_sum(model, batch)[0]
    assert first == second  # no dropout in eval mode: deterministic


def test_chunked_loss_equals_cross_entropy_across_chunk_boundaries(monkeypatch):
    monkeypatch.setattr(loss, "CHUNK", 7)
    torch.manual_seed(0)
    hidden = torch.randn(20, 16, dtype=torch.double, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.double, requires_grad=True)
    targets = torch.randint(0, 50, (20,))
    got = ChunkedNll.apply(hidden, weight, targets)
    want = F.cross_entropy(hidden @ weight.T, targets, reduction="none")
    torch.testing.assert_close(got, want)
    assert torch.autograd.gradcheck(lambda h, w: ChunkedNll.apply(h, w, targets), (hidden, weight))


def test_examples_in_one_batch_do_not_see_each_other_or_the_padding(tokenizer, tiny_model_dir):
    """A constructed pair: a short example alone, and beside a long one (its row then carries padding)."""
    model = _lora_model(tiny_model_dir)
    use_fast_lora(model)
    model.eval()
    short, long_ = (encode_chat(tokenizer, r["messages"], 128) for r in ticket_rows(2))
    short.input_ids[:] = short.input_ids[:40]
    short.labels[:] = short.input_ids[:40]
    with torch.no_grad():
        alone = answer_logps(model, collate([short], tokenizer.pad_token_id))
        paired = answer_logps(model, collate([short, long_], tokenizer.pad_token_id))
        other = answer_logps(model, collate([long_], tokenizer.pad_token_id))
    assert collate([short, long_], tokenizer.pad_token_id)["attention_mask"][0].sum() < 80  # the short row is padded
    torch.testing.assert_close(paired[0], alone[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(paired[1], other[0], rtol=1e-5, atol=1e-4)
