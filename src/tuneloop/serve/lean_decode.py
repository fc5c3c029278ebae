"""A lean decode step for Llama-style models: fused projections and no per-step plumbing.

One decode step multiplies one token per running request by every weight: on CPU it is bound by how
fast the weights stream from memory. transformers' Llama runs seven small products per layer (q, k, v,
o, gate, up, down); the small ones stream badly (measured on the embedded model's shapes at one
thread, the 420 MB of layer weights took ~29 ms as four products per layer against ~43 ms as seven),
and each step also rebuilds masks and passes keyword plumbing through every layer. Here q/k/v and
gate/up are one product each, over one buffer per layer whose slices *are* the model's own weights
(views, so no memory is doubled and prefill, LoRA wrappers and everything else see the same tensors),
and the step is the layer arithmetic written out. Prefill still runs through transformers.

Only architectures whose decoder layer is exactly this arithmetic are taken (`LeanDecoder.for_model`):
Llama and Qwen2 with SiLU gates and full attention; anything else keeps transformers' forward. Requests
with a LoRA/DoRA adapter also keep it (the adapters sit on the separate projections).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")


@dataclass
class _Layer:
    input_norm: torch.nn.Module
    post_norm: torch.nn.Module
    qkv: torch.Tensor  # (q + 2 kv, hidden), column-major
    qkv_bias: torch.Tensor | None
    o: torch.nn.Linear
    gate_up: torch.Tensor  # (2 intermediate, hidden), column-major
    down: torch.nn.Linear


class LeanDecoder:
    def __init__(self, model):
        inner = model.model
        config = model.config
        self.embed, self.norm, self.rotary, self.head = inner.embed_tokens, inner.norm, inner.rotary_emb, model.lm_head
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.layers = [self._fuse(layer) for layer in inner.layers]

    @classmethod
    def for_model(cls, model) -> LeanDecoder | None:
        """A lean decoder for `model`, or None when its layers are not plain Llama/Qwen2 layers on CPU."""
        config = model.config
        plain = (
            type(model).__name__ in ARCHITECTURES
            and config.hidden_act == "silu"
            and not getattr(config, "mlp_bias", False)
            and set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}
            and (getattr(config, "sliding_window", None) is None or not getattr(config, "use_sliding_window", True))
        )
        if not plain or model.lm_head.weight.device.type != "cpu" or model.lm_head.weight.dtype != torch.float32:
            return None
        return cls(model)

    @staticmethod
    def _fuse(layer) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        qkv = _share([attn.q_proj, attn.k_proj, attn.v_proj])
        biases = [p.bias for p in (attn.q_proj, attn.k_proj, attn.v_proj)]
        qkv_bias = torch.cat(biases) if all(b is not None for b in biases) else None
        return _Layer(layer.input_layernorm, layer.post_attention_layernorm, qkv, qkv_bias, attn.o_proj,
                      _share([mlp.gate_proj, mlp.up_proj]), mlp.down_proj)

    @torch.inference_mode()
    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        """Logits (rows, vocabulary) in fp32 for one new token per row; `cache` gains the token's keys and values.

        `mask` (rows, cached + 1) marks real positions (rows are left-padded), `positions` (rows, 1) counts them."""
        rows = ids.shape[0]
        hidden = self.embed(ids)
        cos, sin = self.rotary(hidden, positions)
        attend = mask.bool()[:, None, None, :]
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        cos, sin = cos[:, None], sin[:, None]  # (rows, 1, 1, head_dim): one rotation for q's and k's heads together
        half = self.head_dim // 2
        for index, layer in enumerate(self.layers):
            qkv = F.linear(_rms(hidden, layer.input_norm), layer.qkv, layer.qkv_bias)
            qk = qkv[..., : q_width + kv_width].view(rows, 1, self.heads + self.kv_heads, self.head_dim)
            # rotate_half(x) = cat(-x2, x1): x * cos + rotate_half(x) * sin, as transformers computes it
            qk = qk * cos + torch.cat((-qk[..., half:], qk[..., :half]), dim=-1) * sin
            q = qk[:, :, : self.heads].transpose(1, 2)
            k = qk[:, :, self.heads :].transpose(1, 2)
            v = qkv[..., q_width + kv_width :].view(rows, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            k, v = cache.layers[index].update(k, v)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend, scale=self.scaling,
                                                 enable_gqa=self.heads != self.kv_heads)
            hidden = hidden + layer.o(out.transpose(1, 2).reshape(rows, 1, q_width))
            gate, up = F.linear(_rms(hidden, layer.post_norm), layer.gate_up).chunk(2, dim=-1)
            hidden = hidden + layer.down(F.silu(gate).mul_(up))
        return self.head(_rms(hidden, self.norm))[:, -1].float()


def _rms(x: torch.Tensor, norm: torch.nn.Module) -> torch.Tensor:
    """Llama's RMSNorm as one fused op (transformers runs it as seven)."""
    return F.rms_norm(x, norm.weight.shape, norm.weight, norm.variance_epsilon)


def _share(linears: list[torch.nn.Linear]) -> torch.Tensor:
    """One column-major buffer holding the linears' weights end to end; each linear's weight becomes a view of it."""
    fused = torch.cat([linear.weight.detach() for linear in linears]).t().contiguous().t()
    start = 0
    for linear in linears:
        rows = linear.weight.shape[0]
        linear.weight.data = fused[start : start + rows]
        start += rows
    return fused
