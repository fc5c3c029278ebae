"""The decode fast paths keep the numbers: the growing KV cache equals transformers' DynamicCache, the
column-major weight layout gives the same logits, and so does the lean decode step."""

from __future__ import annotations

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from tuneloop.models import load_model
from tuneloop.compat import GrowingLayer, growing_cache
from tuneloop.serve.column_major import layout_for_decoding
from tuneloop.serve.lean_decode import LeanDecoder


def _states(rows: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 8, generator=g), torch.randn(rows, 2, length, 8, generator=g)


def test_growing_layer_returns_what_concatenation_returns_through_steps_selects_and_merges():
    grown, plain = GrowingLayer(), DynamicLayer()
    for seed, length in enumerate([5, 1, 1, 1]):
        k, v = _states(3, length, seed)
        got, want = grown.update(k, v), plain.update(k, v)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    index = torch.tensor([0, 2])  # a finished row leaves
    grown.batch_select_indices(index), plain.batch_select_indices(index)
    for seed in range(10, 14):
        k, v = _states(2, 1, seed)
        got, want = grown.update(k, v), plain.update(k, v)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert grown.get_seq_length() == plain.get_seq_length() == 12


def test_decode_steps_write_into_spare_room_without_reallocating():
    layer = GrowingLayer()
    layer.update(*_states(4, 30, 0))
    buffer = layer._keys.data_ptr()
    for seed in range(20):
        keys, _ = layer.update(*_states(4, 1, seed + 1))
    assert layer._keys.data_ptr() == buffer and keys.shape[-2] == 50


def test_growing_cache_replaces_only_full_attention_layers(tiny_model_dir):
    cache = growing_cache(load_model(tiny_model_dir).config)
    assert cache.layers and all(type(layer) is GrowingLayer for layer in cache.layers)


def test_column_major_weights_give_the_same_logits(tiny_model_dir):
    plain, relaid = load_model(tiny_model_dir), load_model(tiny_model_dir)
    assert layout_for_decoding(relaid) > 0
    assert not relaid.lm_head.weight.is_contiguous() and torch.equal(relaid.lm_head.weight, plain.lm_head.weight)
    ids = torch.randint(0, plain.config.vocab_size, (16, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(relaid(input_ids=ids).logits, plain(input_ids=ids).logits, rtol=1e-5, atol=1e-5)


def _tiny(cls_name: str, **extra):
    import transformers

    config = getattr(transformers, cls_name.replace("ForCausalLM", "Config"))(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, **extra)
    torch.manual_seed(0)
    return getattr(transformers, cls_name)(config).eval()


def _decode_logits(model, lean, prompts: list[list[int]], steps: int) -> list[torch.Tensor]:
    from tuneloop.serve.batch import Batch
    from tuneloop.serve.generation import Generation, Sampling

    batch = Batch(model, 0, peft=False, lean=lean)
    batch.join([Generation(p, steps + 1, lambda *a: None, Sampling(temperature=0)) for p in prompts])
    logits = []
    for _ in range(steps):
        batch.step(lambda job, token: False)
        logits.append(batch.logits.clone())
    return logits


@pytest.mark.parametrize("architecture", ["LlamaForCausalLM", "Qwen2ForCausalLM"])
def test_lean_decode_steps_give_transformers_logits_for_left_padded_rows(architecture):
    """Qwen2 brings q/k/v biases; prompts of different lengths bring left padding into the mask."""
    model = _tiny(architecture)
    layout_for_decoding(model)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]
    want = _decode_logits(model, None, prompts, 6)
    lean = LeanDecoder.for_model(model)
    assert lean is not None
    got = _decode_logits(model, lean, prompts, 6)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_lean_decoder_shares_the_model_weights_instead_of_copying_them():
    model = _tiny("LlamaForCausalLM")
    before = sum(p.numel() for p in model.parameters())
    lean = LeanDecoder.for_model(model)
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.weight.data_ptr() == lean.layers[0].qkv.data_ptr()
    assert attn.k_proj.weight.untyped_storage().data_ptr() == lean.layers[0].qkv.untyped_storage().data_ptr()
    assert sum(p.numel() for p in model.parameters()) == before


def test_architectures_the_lean_step_does_not_know_keep_transformers_forward():
    assert LeanDecoder.for_model(_tiny("Qwen3ForCausalLM")) is None  # q/k norms
    assert LeanDecoder.for_model(_tiny("LlamaForCausalLM", hidden_act="gelu")) is None
    assert LeanDecoder.for_model(_tiny("LlamaForCausalLM", mlp_bias=True)) is None


def _first_logits(model, prompts: list[list[int]], prefixes) -> list[torch.Tensor]:
    """The logits of each prompt's first generated token, the prompts joining one after another."""
    from tuneloop.serve.batch import Batch
    from tuneloop.serve.generation import Generation, Sampling

    got = []
    for prompt in prompts:
        batch = Batch(model, 0, peft=False, prefixes=prefixes)
        batch.join([Generation(prompt, 4, lambda *a: None, Sampling(temperature=0))])
        got.append(batch.logits[0].clone())
    return got


def test_a_prompt_that_starts_like_a_cached_one_prefills_only_the_rest_with_the_same_logits():
    from tuneloop.serve.prefix_cache import PrefixCache

    model = _tiny("LlamaForCausalLM")
    system = list(range(3, 23))  # 20 shared tokens
    prompts = [system + [30, 31, 32], system + [40, 41], system + [30, 31, 50, 51], [60, 61, 62]]
    prefixes = PrefixCache(budget=1 << 20, min_tokens=16)
    want = _first_logits(model, prompts, None)
    got = _first_logits(model, prompts, prefixes)
    assert prefixes.hits == 2 and prefixes.reused_tokens == 20 + 22  # the third shares 22 tokens with the first
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_prefix_cache_keeps_adapters_apart_and_stays_within_its_budget():
    from tuneloop.serve.prefix_cache import PrefixCache

    layer = (torch.zeros(1, 2, 20, 8), torch.zeros(1, 2, 20, 8))  # 2 x 1,280 bytes
    cache = PrefixCache(budget=3 * 2560, min_tokens=4)
    cache.add("", list(range(20)), [layer])
    assert cache.longest("adapter-a", list(range(20)) + [99]) is None  # another adapter's keys differ
    assert cache.longest("", list(range(20)) + [99])[0] == 20
    assert cache.longest("", list(range(20)))[0] == 19  # the last prompt token is always prefilled
    assert cache.longest("", [0, 1, 2, 7, 8]) is None  # 3 shared tokens: under min_tokens
    for start in range(1, 4):
        cache.add("", list(range(start, start + 20)), [layer])
    assert len(cache.entries) == 3 and cache.bytes <= cache.budget
    assert cache.longest("", list(range(20)) + [99]) is None  # the oldest left first
