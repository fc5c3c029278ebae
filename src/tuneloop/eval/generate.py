"""Batched greedy generation with left padding and the KV cache, one progress bar per system."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tuneloop.models.chat import stop_ids
from tuneloop.ui import progress


@torch.inference_mode()
def generate(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
    max_new_tokens: int, batch_size: int, label: str = "generate", grammars: list[str | None] | None = None,
) -> list[str]:
    """Greedy answers for rendered prompts (chat template already applied), in input order; with `grammars`,
    each prompt's answer is decoded under its own grammar (tuneloop/grammar.py; None leaves that one free)."""
    tokenizer.padding_side = "left"  # answers must start right after each prompt, not after padding
    # Longest prompts first: each batch holds prompts of similar length, so little is padding.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    with progress(transient=True) as bar:
        task = bar.add_task(label, total=len(prompts), info="")
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer([prompts[i] for i in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            output = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids(tokenizer),
                logits_processor=_constraints(model, tokenizer, [grammars[i] for i in chunk], batch) if grammars else None,
            )
            new_tokens = output[:, batch["input_ids"].shape[1]:]
            for i, text in zip(chunk, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                answers[i] = text.strip()
            bar.update(task, advance=len(chunk))
    return answers


def _constraints(model, tokenizer, grammars: list[str | None], batch):
    from transformers import LogitsProcessorList

    from tuneloop.grammar import ConstrainedLogits, Constraint

    vocab = model.get_output_embeddings().weight.shape[0]
    matchers = [Constraint(tokenizer, g, vocab) if g is not None else None for g in grammars]
    return LogitsProcessorList([ConstrainedLogits(matchers, batch["input_ids"].shape[1], stop_ids(tokenizer))])
