"""Padding-free batches: a micro-batch's examples end to end in one row, each attending only to itself.

A shuffled batch of mixed lengths right-padded to its longest example spent ~40% of its tokens on
padding (20-400-token rows). Packed, the same examples (the same shuffled batch, so the same loss)
become one row of exactly their tokens: position ids restart at 0 for every example, the first label
of each is ignored (it would be predicted from the previous example's last token), and attention runs
example by example with SDPA's fused causal kernel, so no example sees another and no attention is
spent across examples (a block-diagonal mask over the whole row would cost the row's length squared).

The per-example attention is an attention function registered with transformers (`ATTENTION`); while
`packed_attention(model)` is active the model's layers use it, and it reads the example lengths from
the `tuneloop_segments` keyword that the decoder passes down to every attention call. Active around
forward *and* backward, so gradient checkpointing's recomputation sees the same attention. A name the
mask functions do not know makes transformers build no mask at all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from tuneloop.models.chat import IGNORE, Encoded

ATTENTION = "tuneloop_packed"
SEGMENTS = "tuneloop_segments"


def pack(examples: list[Encoded]) -> dict:
    """One row of the examples' tokens: input ids, labels, restarting position ids, and the lengths."""
    ids, labels, positions = [], [], []
    for example in examples:
        n = len(example.input_ids)
        ids += example.input_ids
        labels += [IGNORE, *example.labels[1:]]
        positions += range(n)
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
        SEGMENTS: tuple(len(e.input_ids) for e in examples),
    }


def supports_packing(model, longest: int) -> bool:
    """Whether per-example causal attention is exactly what this model computes for examples up to `longest` tokens.

    A sliding window shorter than that, logit soft-capping, non-causal or other layer types, and models
    whose layers do not go through transformers' attention functions keep padded batches.
    """
    config = model.get_decoder().config
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False or (getattr(config, "layer_types", None) and "sliding_attention" not in layer_types):
        window = None  # set but unused (Qwen2-MoE's sliding_window 0 with use_sliding_window false)
    return (
        (window is None or window >= longest)
        and layer_types <= {"full_attention", "sliding_attention"}
        and getattr(config, "attn_logit_softcapping", None) is None
        and getattr(config, "is_causal", True)
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager", ATTENTION)
        and getattr(model.get_decoder(), "_supports_attention_backend", False)
    )


@contextmanager
def packed_attention(model) -> Iterator[None]:
    """Route the model's attention through `per_example_attention` for the duration (forward and backward)."""
    config = model.get_decoder().config
    before = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        yield
    finally:
        config._attn_implementation = before


def per_example_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """(1, heads, length, dim) queries over packed examples -> (1, length, heads, dim), causal within each example."""
    segments = kwargs.pop(SEGMENTS, None)
    if segments is None:  # a right-padded batch: causal attention without a mask is exact for its real tokens
        return sdpa_attention_forward(module, query, key, value, None, dropout=dropout, scaling=scaling, **kwargs)
    gqa = query.shape[1] != key.shape[1]
    parts, start = [], 0
    for n in segments:
        part = slice(start, start + n)
        out = F.scaled_dot_product_attention(query[:, :, part], key[:, :, part], value[:, :, part], dropout_p=dropout,
                                             is_causal=True, scale=scaling, enable_gqa=gqa)
        parts.append(out.transpose(1, 2))
        start += n
    return torch.cat(parts, dim=1), None


AttentionInterface.register(ATTENTION, per_example_attention)
