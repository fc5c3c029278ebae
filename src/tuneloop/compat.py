"""Every place tuneloop depends on a library's internals rather than its documented API, in one module.

The suite runs with transformers 5.24 and peft 0.21.2 (`TESTED_WITH`); `SUPPORTED` is the range
pyproject.toml allows for each (a test checks that the two agree, and that the installed versions are in it). When a library release moves one of these internals, this is the
file to change, and nothing else should need to:

- peft: which LoRA layers our fused training forward may replace, and the pieces of a layer it reads
  (train/fast_lora.py holds the maths, which is plain torch);
- transformers: the KV cache's layer class (a subclass that appends into spare room, plus merging the
  rows of two caches for continuous batching), the name of the cache argument of `forward`, the switch
  for activation checkpointing, and the quantizer marker a GGUF-loaded model carries.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

# library -> (lowest allowed, first release not allowed): the same bounds as pyproject.toml's requirements.
SUPPORTED = {"transformers": ("4.56", "6"), "peft": ("0.17", "0.23")}
TESTED_WITH = {"transformers": "5.24.0", "peft": "0.21.2"}


# --- peft: the LoRA layers our fused training forward replaces ------------------------------------
def _lora_linear():
    from peft.tuners.lora.layer import Linear

    return Linear


def plain_lora_layers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """peft LoRA linear layers whose base is a plain nn.Linear (not 4-bit, not another adapter type)."""
    lora_linear = _lora_linear()
    for module in model.modules():
        if isinstance(module, lora_linear) and type(module.get_base_layer()) is torch.nn.Linear:
            yield module


def mergeable_lora_layers(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """peft LoRA / DoRA linear layers that `merge_adapter` folds exactly enough (floating-point bases, not 4-bit)."""
    lora_linear = _lora_linear()
    for module in model.modules():
        if isinstance(module, lora_linear) and type(module.get_base_layer()) is torch.nn.Linear \
                and module.get_base_layer().weight.is_floating_point():
            yield module


def replace_forward(layer: torch.nn.Module, forward: Callable) -> None:
    """Give one layer instance its own forward (the class, and so every other model, keeps peft's)."""
    layer.forward = types.MethodType(forward, layer)


def peft_lora_forward(layer: torch.nn.Module, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's own LoRA forward, for the cases the fused one does not cover."""
    return _lora_linear().forward(layer, x, *args, **kwargs)


def lora_training_parts(layer, x: torch.Tensor, args: tuple, kwargs: dict) -> tuple | None:
    """(weight, bias, lora_A, lora_B, scaling, dropout p) when the plain LoRA training maths applies to this call:
    one active LoRA adapter (not DoRA, no other variant), training with gradients, unmerged, no autocast,
    a frozen base and matching dtypes. None otherwise (then peft's forward runs)."""
    adapter = layer.active_adapters[0] if len(layer.active_adapters) == 1 else None
    base = layer.get_base_layer()
    if (
        adapter is None or args or kwargs or not layer.training or not torch.is_grad_enabled() or layer.disable_adapters
        or layer.merged or adapter not in layer.lora_A or layer.use_dora.get(adapter) or adapter in layer.lora_variant
        or torch.is_autocast_enabled(x.device.type) or base.weight.requires_grad
        or not x.dtype == base.weight.dtype == layer.lora_A[adapter].weight.dtype
    ):
        return None
    dropout = layer.lora_dropout[adapter]
    p = dropout.p if isinstance(dropout, torch.nn.Dropout) else 0.0
    return base.weight, base.bias, layer.lora_A[adapter].weight, layer.lora_B[adapter].weight, layer.scaling[adapter], p


# --- transformers: models ------------------------------------------------------------------------
def enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer in the backward pass (transformers renamed the switch)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()


@functools.cache
def cache_argument(model_class) -> str:
    """transformers 5.x renames `forward`'s `past_key_values` to `cache`."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def drop_quantizer_marker(model) -> None:
    """A model loaded from a GGUF file holds dequantized floats but still says it is quantized, which makes
    `save_pretrained` refuse; drop the marker."""
    model.hf_quantizer = None
    model.is_quantized = False
    model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


# --- transformers: the KV cache ------------------------------------------------------------------
SPARE = 64  # tokens of room added beyond what a reallocation needs (plus half the current length)


class GrowingLayer(DynamicLayer):
    """A cache layer that appends into spare room instead of concatenating at every decode step.

    transformers' DynamicLayer grows with `torch.cat`, copying each layer's whole cache once per token:
    ~15% of a batch-16 decode step of the embedded model on CPU. Here each layer keeps a buffer with room
    to spare and exposes the filled part as a view; a token costs one small copy, and the buffer is
    reallocated only when it is full or when the batch changes shape (a join merges caches, a finished
    row leaves), which replace the layer's tensors.
    """

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        length = self.keys.shape[-2] if self.keys.numel() else 0
        new = key_states.shape[-2]
        if not self._owns_room(key_states, length + new):
            self._reallocate(key_states, value_states, length, length + new)
        self._keys[..., length : length + new, :] = key_states
        self._values[..., length : length + new, :] = value_states
        self.keys, self.values = self._keys[..., : length + new, :], self._values[..., : length + new, :]
        return self.keys, self.values

    def _owns_room(self, key_states: torch.Tensor, needed: int) -> bool:
        """The layer's tensors are still views of its buffer, and the buffer has room and the right rows."""
        room = getattr(self, "_keys", None)
        return (
            room is not None and self.keys.numel() > 0 and self.keys.data_ptr() == room.data_ptr()
            and self.values.data_ptr() == self._values.data_ptr()
            and room.shape[:2] == key_states.shape[:2] and room.shape[-2] >= needed
        )

    def _reallocate(self, key_states: torch.Tensor, value_states: torch.Tensor, length: int, needed: int) -> None:
        size = needed + needed // 2 + SPARE
        self._keys = key_states.new_empty((*key_states.shape[:2], size, key_states.shape[-1]))
        self._values = value_states.new_empty((*value_states.shape[:2], size, value_states.shape[-1]))
        if length:
            self._keys[..., :length, :] = self.keys
            self._values[..., :length, :] = self.values


def growing_cache(config) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers are GrowingLayers (sliding ones are kept)."""
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def merge_cache_rows(into: DynamicCache, other: DynamicCache) -> None:
    """Append `other`'s rows to `into`, left-padding the shorter side with masked zeros."""
    for mine, theirs in zip(into.layers, other.layers):
        width = max(mine.keys.shape[-2], theirs.keys.shape[-2])
        pad = lambda t: F.pad(t, (0, 0, width - t.shape[-2], 0))  # noqa: E731 - (head_dim, seq) padding
        mine.keys = torch.cat([pad(mine.keys), pad(theirs.keys)])
        mine.values = torch.cat([pad(mine.values), pad(theirs.values)])
