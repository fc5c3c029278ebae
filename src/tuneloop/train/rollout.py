"""Answers from the model being trained, for GRPO's rollouts and for validation by task metrics.

transformers' `generate` with its KV cache over left-padded prompt batches (the serving engine is a stage
of its own, which training does not import). The answer's token ids are kept exactly as sampled, so
the loss is taken on the very tokens the policy produced, never on a re-tokenised decode.

Decoding through unmerged LoRA layers costs three matrix products per layer and step where a merged
layer costs one, and on a CPU a decode step is mostly per-call overhead: `MergedForDecoding` folds the
adapters into the base weights for the rollout and puts the base weights back bit for bit afterwards
(from a copy taken once), so the reference (adapters off) never drifts by merge/unmerge rounding.

A group of answers to one prompt shares one prefill: the prompts are run once (all but their last token),
their KV cache repeated `samples` times along the batch, and `generate` continues from it, so the prompt's
compute is paid once per group instead of once per answer (1.2x on the ticket-triage rollouts of the embedded
model, 8 answers to ~90-token prompts, where the decode steps take most of the time).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tuneloop import compat
from tuneloop.models.chat import stop_ids


@dataclass
class Answer:
    ids: list[int]  # generated token ids, up to and including the end-of-turn token when one came
    text: str  # decoded without special tokens, stripped


class MergedForDecoding:
    """Adapters merged into the base weights while decoding (LoRA and DoRA on floating-point bases); a
    model without mergeable adapters decodes as it is."""

    def __init__(self, model):
        self.model = model
        layers = list(compat.mergeable_lora_layers(model))
        self.saved = [(layer.get_base_layer().weight, layer.get_base_layer().weight.detach().clone()) for layer in layers]

    @contextmanager
    def __call__(self):
        if not self.saved:
            yield
            return
        self.model.merge_adapter()
        try:
            yield
        finally:
            self.model.unmerge_adapter()
            with torch.no_grad():
                for weight, original in self.saved:
                    weight.copy_(original)


@torch.no_grad()
def answer(model, tokenizer, prompts: list[list[int]], *, samples: int = 1, temperature: float = 1.0, top_p: float = 1.0,
           max_new_tokens: int, greedy: bool = False) -> list[list[Answer]]:
    """`samples` answers per prompt (sampled at `temperature`/`top_p`, or greedy), in prompt order."""
    was_training = model.training
    model.eval()  # no dropout, no activation checkpointing while decoding
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    stops = stop_ids(tokenizer)
    device = next(model.parameters()).device
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):  # left padding: every answer starts right after its prompt
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    cache = shared_prefill(model, ids, mask, samples) if samples > 1 and width > 1 else None
    if cache is not None:
        ids, mask = ids.repeat_interleave(samples, dim=0), mask.repeat_interleave(samples, dim=0)
    sampling = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None} if greedy else {
        "do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": 0}
    shared = {compat.cache_argument(_decoder_class(model)): cache} if cache is not None else {"num_return_sequences": samples}
    output = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, pad_token_id=pad,
                            eos_token_id=stops, **shared, **sampling)
    model.train(was_training)
    answers: list[list[Answer]] = [[] for _ in prompts]
    for row, sequence in enumerate(output[:, width:].tolist()):
        end = next((i for i, token in enumerate(sequence) if token in stops), None)
        if end is not None:
            sequence = sequence[: end + 1]
        answers[row // samples].append(Answer(sequence, tokenizer.decode(sequence, skip_special_tokens=True).strip()))
    return answers


def shared_prefill(model, ids: torch.Tensor, mask: torch.Tensor, samples: int):
    """The KV cache of the left-padded prompts but their last token (which `generate` feeds itself), with the
    positions `generate` gives them, each row repeated `samples` times; None where the model's cache cannot
    be repeated (then `generate` prefills every copy)."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    if not hasattr(cache, "batch_repeat_interleave"):
        return None
    cache.batch_repeat_interleave(samples)
    return cache


def _decoder_class(model) -> type:
    return type(model.get_base_model() if hasattr(model, "get_base_model") else model)


def task_scores(model, tokenizer, prompts, task, *, batch_size: int, max_new_tokens: int, autocast) -> dict[str, float]:
    """The task's metrics (metrics/: per-sample means and corpus scores, per-class F1 left out) over greedy
    answers to `prompts` (train/prompts.Prompt); what `train.select_by` can name."""
    from tuneloop.metrics import Context, mean_scores, score_corpus, score_samples

    outputs: list[str] = []
    for start in range(0, len(prompts), batch_size):
        with autocast():
            batch = answer(model, tokenizer, [p.ids for p in prompts[start : start + batch_size]], greedy=True, max_new_tokens=max_new_tokens)
        outputs += [a[0].text for a in batch]
    references = [p.item["reference"] for p in prompts]
    ctx = Context(task)
    scores = {**mean_scores(score_samples(outputs, references, ctx)), **score_corpus(outputs, references, ctx)}
    return {k: v for k, v in scores.items() if ".f1." not in k}
