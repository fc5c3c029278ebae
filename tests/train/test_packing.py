"""Padding-free batches: the same loss and gradients as padded ones, no example sees another, and the
per-example attention is what actually runs (not transformers' block-diagonal mask over the whole row)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

from tests.conftest import ticket_rows
from tuneloop.models import encode_chat, load_model
from tuneloop.models.chat import IGNORE, Encoded
from tuneloop.train import packing
from tuneloop.train.batching import collate
from tuneloop.train.fast_lora import use_fast_lora
from tuneloop.train.loss import answer_loss_sum
from tuneloop.train.packing import SEGMENTS, pack, packed_attention, supports_packing


def _examples(tokenizer, n: int = 5) -> list[Encoded]:
    examples = [encode_chat(tokenizer, r["messages"], 128) for r in ticket_rows(n)]
    cut = len(examples[1].input_ids) // 2  # uneven lengths, so the padded batch really pads
    examples[1] = Encoded(examples[1].input_ids[:cut], examples[1].input_ids[:cut])  # every token a target
    return examples


def _lora_model(tiny_model_dir):
    torch.manual_seed(0)
    config = PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(load_model(tiny_model_dir), config).train()
    use_fast_lora(model)
    return model


def _loss_and_grads(model, batch) -> tuple[float, int, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    with packed_attention(model) if SEGMENTS in batch else torch.enable_grad():
        total, n = answer_loss_sum(model, batch)
        total.backward()
    return total.item(), n, {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def test_pack_lays_examples_end_to_end_with_restarting_positions():
    a, b = Encoded([5, 6, 7], [IGNORE, 6, 7]), Encoded([8, 9], [8, 9])
    batch = pack([a, b])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    # b's first token would be predicted from a's last one: not a target
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]]
    assert batch[SEGMENTS] == (3, 2)


def test_packed_loss_and_gradients_equal_the_padded_batch(tokenizer, tiny_model_dir):
    examples = _examples(tokenizer)
    padded_batch = collate(examples, tokenizer.pad_token_id)
    assert padded_batch["attention_mask"].float().mean() < 0.95  # the padded batch carries padding
    padded_model = _lora_model(tiny_model_dir)
    packed_model = copy.deepcopy(padded_model)
    loss_padded, n_padded, grads_padded = _loss_and_grads(padded_model, padded_batch)
    loss_packed, n_packed, grads_packed = _loss_and_grads(packed_model, pack(examples))
    assert n_packed == n_padded
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    for name in grads_padded:
        torch.testing.assert_close(grads_packed[name], grads_padded[name], rtol=1e-4, atol=1e-6, msg=name)


def test_a_packed_example_scores_as_it_does_alone(tokenizer, tiny_model_dir):
    model = _lora_model(tiny_model_dir).eval()
    examples = _examples(tokenizer, 3)
    with torch.no_grad(), packed_attention(model):
        together, _ = answer_loss_sum(model, pack(examples))
        alone = sum(answer_loss_sum(model, pack([e]))[0] for e in examples)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-4)


def test_attention_runs_per_example_with_the_fused_causal_kernel_and_no_mask(tokenizer, tiny_model_dir, monkeypatch):
    calls = []

    def spy(query, key, value, attn_mask=None, **kwargs):
        calls.append((query.shape[2], attn_mask is None, kwargs.get("is_causal")))
        return F.scaled_dot_product_attention.__wrapped__(query, key, value, attn_mask=attn_mask, **kwargs)

    spy.__wrapped__ = F.scaled_dot_product_attention
    monkeypatch.setattr(packing.F, "scaled_dot_product_attention", spy)
    model = _lora_model(tiny_model_dir)
    examples = _examples(tokenizer, 3)
    with torch.no_grad(), packed_attention(model):
        answer_loss_sum(model, pack(examples))
    lengths = [len(e.input_ids) for e in examples]
    assert calls == [(n, True, True) for _layer in range(2) for n in lengths]
    assert model.get_decoder().config._attn_implementation == "sdpa"  # restored


def test_models_packing_cannot_be_exact_for_keep_padded_batches():
    tiny = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 1}
    assert supports_packing(Qwen2ForCausalLM(Qwen2Config(**tiny)), 512)
    windowed = MistralForCausalLM(MistralConfig(**tiny, sliding_window=256))
    assert supports_packing(windowed, 200)  # every example fits in the window
    assert not supports_packing(windowed, 512)


def test_training_packs_by_default_and_padding_free_off_pads(tokenizer, tiny_model_dir, data_dir):
    from tuneloop.config import TrainConfig
    from tuneloop.train.sft import Sft

    for padding_free, packed in [(True, True), (False, False)]:
        objective = Sft(tokenizer, data_dir, TrainConfig(padding_free=padding_free, batch_size=4))
        objective.attach(load_model(tiny_model_dir))
        batch = objective.collate(objective.batches(0)[0])
        assert (SEGMENTS in batch) is packed and ("attention_mask" in batch) is not packed
