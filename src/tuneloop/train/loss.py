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

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from tuneloop.models.chat import IGNORE
from tuneloop.train.packing import SEGMENTS

CHUNK = 256  # target positions per chunk: 256 x 49k vocabulary x fp32 = 50 MB


def answer_loss_sum(model: PreTrainedModel, batch: dict[str, torch.Tensor], fast: bool = True) -> tuple[torch.Tensor, int]:
    hidden, targets = _hidden_at_targets(model, batch, fast)
    return token_nll(hidden, model.get_output_embeddings(), targets, fast).sum(), targets.numel()


def answer_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor], fast: bool = True) -> torch.Tensor:
    """Per-row sum of log-probabilities of the answer tokens (what DPO compares), head on targets only."""
    token_logps, rows = answer_token_logps(model, batch, fast)
    n_rows = batch["labels"].shape[0]
    return torch.zeros(n_rows, device=token_logps.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)


def answer_token_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor], fast: bool = True,
                       temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of every answer token, flat in row-major order, and the row each belongs to (what GRPO
    weighs); at `temperature`, of the distribution the answers were sampled from (logits / temperature)."""
    hidden, targets = _hidden_at_targets(model, batch, fast)
    if temperature != 1.0:
        hidden = hidden / temperature  # (h / T) @ W.T = logits / T, without a logits tensor
    labels = batch["labels"][:, 1:]
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(labels)[labels != IGNORE]
    return -token_nll(hidden, model.get_output_embeddings(), targets, fast), rows


def token_nll(hidden: torch.Tensor, head: torch.nn.Linear, targets: torch.Tensor, fast: bool = True) -> torch.Tensor:
    """Negative log-likelihood of each target given its hidden state: (n, d) -> (n,), in fp32."""
    if fast and head.bias is None and type(head) is torch.nn.Linear:
        return ChunkedNll.apply(hidden, head.weight, targets)
    return F.cross_entropy(head(hidden).float(), targets, reduction="none")


def _hidden_at_targets(model, batch: dict[str, torch.Tensor], fast: bool) -> tuple[torch.Tensor, torch.Tensor]:
    if SEGMENTS in batch:  # packed (see packing.py): one row, positions restart per example
        inputs = {"position_ids": batch["position_ids"], SEGMENTS: batch[SEGMENTS]}
    else:
        inputs = {"attention_mask": None if fast else batch.get("attention_mask")}
    hidden = model.get_decoder()(input_ids=batch["input_ids"], use_cache=False, **inputs).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    return hidden[:, :-1][keep], targets[keep]


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
