"""Next-token loss over answer tokens only: the output head runs only where a loss is taken, in chunks.

The output projection (hidden -> vocabulary) over every position was ~43% of a step on CPU while
~10% of positions carry loss, so we run the decoder, pick the positions whose next token is a
target, and project only those. The projection and cross-entropy run chunk by chunk inside one
autograd function that keeps only the log-sum-exp per token and recomputes a chunk's logits in the
backward pass: the (targets x vocabulary) logits tensor is never whole in memory (~150 MB per
micro-batch for a 49k vocabulary, plus its softmax and gradient).

A packed batch (packing.py) has no padding at all. A padded batch is right-padded (batching.collate), so no attention mask is passed to the decoder:
with causal attention a real token only ever sees earlier positions, which are all real, and the
pads' own outputs are never used. Without a mask SDPA takes its fused causal kernel.

Returns the *sum* of token losses and the token count, so that gradient accumulation can divide by
the token count of the whole optimizer step.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from tuneloop.models.chat import IGNORE
from tuneloop.train.packing import SEGMENTS

CHUNK = 256  # target positions per chunk: 256 x 49k vocabulary x fp32 = 50 MB


def answer_loss_sum(model: PreTrainedModel, batch: dict[str, torch.Tensor], fast: bool = True,
                    router_aux: bool = False) -> tuple[torch.Tensor, int]:
    """`router_aux`: for a mixture-of-experts model, add its router's load-balancing loss (times the model's
    router_aux_loss_coef), as transformers does when it trains one: without it a fine-tune can collapse the
    routing onto a few experts. It is weighted by this batch's answer tokens, so that dividing the step's sum by
    its tokens gives the token-weighted mean."""
    hidden, targets, aux = _hidden_at_targets(model, batch, fast, router_aux)
    loss = token_nll(hidden, model.get_output_embeddings(), targets, fast, _softcap(model)).sum()
    return (loss + aux * targets.numel() if aux is not None else loss), targets.numel()


def answer_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor], fast: bool = True) -> torch.Tensor:
    """Per-row sum of log-probabilities of the answer tokens (what DPO compares), head on targets only."""
    token_logps, rows = answer_token_logps(model, batch, fast)
    n_rows = batch["labels"].shape[0]
    return torch.zeros(n_rows, device=token_logps.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)


def answer_token_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor], fast: bool = True,
                       temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every answer token, flat in row-major order, and the row each belongs to (what GRPO
    weighs); at `temperature`, of the distribution the answers were sampled from (logits / temperature)."""
    hidden, targets, _ = _hidden_at_targets(model, batch, fast)
    labels = batch["labels"][:, 1:]
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)[labels != IGNORE]
    return -token_nll(hidden, model.get_output_embeddings(), targets, fast, _softcap(model), temperature), rows


def token_nll(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, fast: bool = True,
              softcap: float | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Negative log-likelihood of each target given its hidden state: (n, d) -> (n,), in fp32.

    `softcap`: the model squashes its logits to cap * tanh(logits / cap) (Gemma 2), so they are computed whole;
    `temperature`: of the distribution logits / T (what GRPO sampled from)."""
    if softcap:
        logits = head(hidden).float()
        return F.cross_entropy(softcap * torch.tanh(logits / softcap) / temperature, targets, reduction="none")
    if temperature != 1.0:
        hidden = hidden / temperature  # (h / T) @ W.T = logits / T, without a logits tensor
    if fast and head.bias is None and type(head) is torch.nn.Linear:
        return ChunkedNll.apply(hidden, head.weight, targets)
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def _softcap(model) -> float | None:
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    return getattr(config, "final_logit_softcapping", None)


def _hidden_at_targets(model, batch: dict[str, torch.Tensor], fast: bool,
                       router_aux: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if SEGMENTS in batch:  # packed (see packing.py): one row, positions restart per example
        inputs = {"position_ids": batch["position_ids"], SEGMENTS: batch[SEGMENTS]}
    else:
        inputs = {"attention_mask": None if fast else batch.get("attention_mask")}
    balance = _load_balancing(model) if router_aux else None
    if balance:
        inputs["output_router_logits"] = True
    out = model.get_decoder()(input_ids=batch["input_ids"], use_cache=False, **inputs)
    aux = balance(out.router_logits, batch.get("attention_mask") if SEGMENTS not in batch else None) if balance else None
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    return out.last_hidden_state[:, :-1][keep], targets[keep], aux


def _load_balancing(model):
    """The model's own load-balancing loss (its modeling module's `load_balancing_loss_func`) scaled by its
    coefficient, as a function of the router logits and attention mask; None for a model without a router."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    coef = getattr(config, "router_aux_loss_coef", None)
    func = getattr(sys.modules.get(type(base).__module__), "load_balancing_loss_func", None)
    experts = getattr(config, "num_local_experts", None) or getattr(config, "num_experts", None)
    if not (coef and func and experts):
        return None
    top_k = config.num_experts_per_tok
    return lambda logits, mask: coef * func(logits, experts, top_k, mask)


class ChunkedNll(torch.autograd.Function):
    """Cross-entropy of `hidden @ weight.T` against `targets`, per token, CHUNK rows at a time (fp32 under autocast)."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def forward(ctx, hidden, weight, targets):
        nll = torch.empty(hidden.shape[0], device=hidden.device, dtype=torch.promote_types(hidden.dtype, torch.float32))
        lse = torch.empty_like(nll)
        for start in range(0, hidden.shape[0], CHUNK):
            part = slice(start, start + CHUNK)
            logits = hidden[part] @ weight.T
            lse[part] = torch.logsumexp(logits, dim=-1)
            nll[part] = lse[part] - logits.gather(1, targets[part, None]).squeeze(1)
        ctx.save_for_backward(hidden, weight, targets, lse)
        return nll

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_nll):
        hidden, weight, targets, lse = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], CHUNK):
            part = slice(start, start + CHUNK)
            # d nll / d logits = softmax - onehot(target)
            probs = (hidden[part] @ weight.T).sub_(lse[part, None]).exp_()
            probs[torch.arange(probs.shape[0], device=probs.device), targets[part]] -= 1
            probs.mul_(grad_nll[part, None])
            if grad_hidden is not None:
                grad_hidden[part] = probs @ weight
            if grad_weight is not None:
                grad_weight.addmm_(probs.T, hidden[part])
        return grad_hidden, grad_weight, None
