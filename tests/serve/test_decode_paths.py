"""The decode fast paths keep the numbers: the growing KV cache equals transformers' DynamicCache, and
the column-major weight layout gives the same logits."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicLayer

from tuneloop.models import load_model
from tuneloop.compat import GrowingLayer, growing_cache
from tuneloop.serve.column_major import layout_for_decoding


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
