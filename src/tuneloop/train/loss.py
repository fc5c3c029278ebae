"""Next-token loss over answer tokens only, computing the output head only where it is needed.

The output projection (hidden -> vocabulary) over every position was ~43% of a step on CPU while
~10% of positions carry loss, so we run the decoder, pick the positions whose next token is a
target, and project only those. Returns the *sum* of token losses and the token count, so that
gradient accumulation can divide by the token count of the whole optimizer step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from tuneloop.models.chat import IGNORE


def answer_loss_sum(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = head(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), targets[keep], reduction="sum"), int(keep.sum())


def answer_logps(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-row sum of log-probabilities of the answer tokens (what DPO compares), head on targets only."""
    decoder = model.get_decoder()
    head = model.get_output_embeddings()
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logps = torch.log_softmax(head(hidden[:, :-1][keep]).float(), dim=-1)
    token_logps = logps.gather(-1, targets[keep].unsqueeze(-1)).squeeze(-1)
    rows = torch.arange(targets.shape[0], device=targets.device).unsqueeze(1).expand_as(targets)[keep]
    return torch.zeros(targets.shape[0], device=token_logps.device, dtype=token_logps.dtype).index_add(0, rows, token_logps)
