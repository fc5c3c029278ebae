"""LoRA layers in one autograd function: cheaper dropout, and no dropped copy of the input kept for backward.

peft computes `base(x) + B(A(dropout(x))) * scaling` as separate autograd ops. On CPU that cost ~30% of
a training step (measured on a 33M Llama, r 16 on every linear layer): `torch.bernoulli_` draws the
dropout mask at ~13 ns per element, and every adapted layer keeps its own fp32 dropped copy of the
input alive until backward. Here the mask comes from 16-bit random integers (64 random bits give four
elements: ~2x cheaper to draw and apply), is kept as one byte per element, and the dropped input is rebuilt from
the input (which q/k/v and gate/up share, so it is kept once) in the backward pass.

The maths is peft's: the same forward value and the same gradients given the same mask (tested), and a
keep probability within 1/65536 of 1 - p. Used for training only, where every dtype matches and no
autocast is active (fp32 on CPU); other cases (bf16 autocast, DoRA, 4-bit bases, several active
adapters) keep peft's own forward. Which layers and which calls qualify is peft-internal: tuneloop/compat.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneloop import compat

LEVELS = 1 << 16


def keep_mask(shape: torch.Size, p: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """A bool mask keeping each element with probability ~1 - p, and the matching 1 / keep-rate scale."""
    drop = round(p * LEVELS)
    count = shape.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), (1 << 63) - 1)
    levels = words.view(torch.int16)[:count].view(shape)
    return levels >= drop - LEVELS // 2, LEVELS / (LEVELS - drop)


class LoraFunction(torch.autograd.Function):
    """y = x W^T + bias + scaling * (dropout(x) A^T) B^T with W and bias frozen."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float, p: float):
        keep, scale = keep_mask(x.shape, p, x.device) if p > 0 else (None, 1.0)
        dropped = x if keep is None else x * keep * scale
        low = F.linear(dropped, lora_a)  # (..., r): small, kept for B's gradient
        out = F.linear(x, weight, bias).add_(F.linear(low, lora_b), alpha=scaling)
        ctx.save_for_backward(x, keep, low, weight, lora_a, lora_b)
        ctx.scaling, ctx.scale = scaling, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        x, keep, low, weight, lora_a, lora_b = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        grad_low = (g @ lora_b).mul_(ctx.scaling)  # (n, r)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            through_lora = (grad_low @ lora_a).view(x.shape)
            if keep is not None:
                through_lora = through_lora.mul_(keep).mul_(ctx.scale)
            grad_x = (grad @ weight).add_(through_lora)
        if ctx.needs_input_grad[3]:
            flat = x.reshape(-1, x.shape[-1])
            dropped = flat if keep is None else flat * keep.reshape(flat.shape) * ctx.scale
            grad_a = grad_low.T @ dropped
        if ctx.needs_input_grad[4]:
            grad_b = (g.T @ low.reshape(-1, low.shape[-1])).mul_(ctx.scaling)
        return grad_x, None, None, grad_a, grad_b, None, None


def use_fast_lora(model) -> int:
    """Give every plain LoRA linear layer of `model` the fused training forward; returns how many."""
    patched = 0
    for layer in compat.plain_lora_layers(model):
        compat.replace_forward(layer, _forward)
        patched += 1
    return patched


def _forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    parts = compat.lora_training_parts(self, x, args, kwargs)
    if parts is None:
        return compat.peft_lora_forward(self, x, *args, **kwargs)
    return LoraFunction.apply(x, *parts)
