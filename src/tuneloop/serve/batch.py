"""A running batch of generations sharing one KV cache (continuous batching).

Rows are left-padded; positions count only real tokens, so a row's keys do not depend on its padding.
That lets jobs join between decode steps (their prefill is padded to the batch's length, or the batch
to theirs) and lets finished rows leave at once, so a short request never waits for a long one.

LoRA adapters mix freely in one batch through PEFT's `adapter_names`; PEFT cannot mix DoRA adapters or
LoRA on a mixture-of-experts model's expert weights, so such a batch holds one adapter only (`Batch.dora`).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from tuneloop.compat import cache_argument, growing_cache, merge_cache_rows
from tuneloop.grammar import GrammarError, restrict
from tuneloop.serve.generation import Generation, dora_key
from tuneloop.serve.lean_decode import LeanDecoder
from tuneloop.serve.prefix_cache import PrefixCache

log = logging.getLogger(__name__)


class Batch:
    def __init__(self, model, pad_id: int, peft: bool, end_ids: list[int] | None = None, lean: LeanDecoder | None = None,
                 prefixes: PrefixCache | None = None):
        self.model, self.pad_id, self.peft, self.end_ids = model, pad_id, peft, sorted(end_ids or [])
        self.lean = lean  # decode steps of base-model rows go through it when the model allows (lean_decode.py)
        self.prefixes = prefixes  # keys and values of recent prompts, shared by the engine's batches (prefix_cache.py)
        self.jobs: list[Generation] = []
        self.dora: str | None = None
        self.generators: list[torch.Generator | None] = []
        self.mask = self.positions = self.logits = None
        self.cache: DynamicCache | None = None

    def __len__(self) -> int:
        return len(self.jobs)

    @torch.inference_mode()
    def join(self, jobs: list[Generation]) -> None:
        """Prefill `jobs` and add them to the running batch: together, except those that start like a cached prompt,
        which prefill one by one from its keys and values."""
        hits = [(job, self.prefixes.longest(_adapter(job), job.prompt_ids) if self.prefixes else None) for job in jobs]
        fresh = [job for job, hit in hits if hit is None]
        if fresh:
            self._prefill(fresh)
        for job, hit in hits:
            if hit is not None:
                self._prefill_after(job, *hit)

    def _prefill(self, jobs: list[Generation]) -> None:
        width = max(len(j.prompt_ids) for j in jobs)
        ids = torch.full((len(jobs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(jobs), width), dtype=torch.long)
        for row, job in enumerate(jobs):
            ids[row, width - len(job.prompt_ids):] = torch.tensor(job.prompt_ids)
            mask[row, width - len(job.prompt_ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = growing_cache(self.model.config)
        logits = self._forward(jobs, ids, mask, positions, cache)
        self._remember(jobs, cache)
        self._add(jobs, mask, positions, logits, cache)

    def _prefill_after(self, job: Generation, shared: int, layers) -> None:
        """Prefill `job`'s prompt past its first `shared` tokens, whose keys and values come from the prefix cache."""
        cache = growing_cache(self.model.config)
        for layer, (keys, values) in zip(cache.layers, layers):
            layer.update(keys[..., :shared, :], values[..., :shared, :])
        n = len(job.prompt_ids)
        mask = torch.ones((1, n), dtype=torch.long)
        positions = torch.arange(shared, n)[None]
        logits = self._forward([job], torch.tensor([job.prompt_ids[shared:]]), mask, positions, cache)
        self._remember([job], cache)
        self._add([job], mask, positions, logits, cache)

    def _remember(self, jobs: list[Generation], cache) -> None:
        if self.prefixes is None:
            return
        for row, job in enumerate(jobs):
            n = len(job.prompt_ids)
            self.prefixes.add(_adapter(job), job.prompt_ids,
                              [(layer.keys[row : row + 1, :, -n:], layer.values[row : row + 1, :, -n:]) for layer in cache.layers])

    def _add(self, jobs: list[Generation], mask, positions, logits, cache) -> None:
        if not self.jobs:
            self.dora = dora_key(jobs[0])
            self.jobs, self.mask, self.positions, self.logits, self.cache = list(jobs), mask, positions[:, -1:], logits, cache
        else:
            self.mask, mask = _pad_left_to_same(self.mask, mask)
            merge_cache_rows(self.cache, cache)
            self.mask = torch.cat([self.mask, mask])
            self.positions = torch.cat([self.positions, positions[:, -1:]])
            self.logits = torch.cat([self.logits, logits])
            self.jobs += jobs
        self.generators += [job.generator for job in jobs]

    @torch.inference_mode()
    def step(self, on_token: Callable[[Generation, int], bool]) -> None:
        """Pick each row's next token, let finished rows leave, and compute the next logits.

        Rows with a grammar (structured outputs, tool calls) are masked first, each by its own matcher. A request
        whose grammar, sampling or decoding fails is failed and leaves; the other rows carry on."""
        broken = {}
        if any(job.constraint is not None for job in self.jobs):
            broken = restrict([job.constraint for job in self.jobs], self.logits, self.end_ids)
        tokens, failed = _pick(self.logits, [job.sampling for job in self.jobs], self.generators)
        failed.update(broken)
        keep = []
        for row, job in enumerate(self.jobs):
            try:
                if row in failed:
                    raise failed[row]
                done = on_token(job, int(tokens[row]))
            except Exception as err:  # this request's problem alone
                log.warning("request failed while sampling or decoding: %s: %s", err.__class__.__name__, err)
                if not job.finished:
                    if isinstance(err, GrammarError):  # the request's own grammar allows no next token
                        job.fail(f"the request's response_format or tools admit no continuation of {job.text!r}: {err}", status=400)
                    else:
                        job.fail(f"generation failed: {err.__class__.__name__}: {err}")
                continue
            if not done:
                keep.append(row)
        if len(keep) < len(self.jobs):
            self._select(keep)
            tokens = tokens[keep]
        if not self.jobs:
            return
        self.mask = torch.cat([self.mask, torch.ones((len(self.jobs), 1), dtype=torch.long)], dim=1)
        self.positions = self.positions + 1
        self.logits = self._forward(self.jobs, tokens[:, None], self.mask, self.positions, self.cache)

    def _select(self, rows: list[int]) -> None:
        self.jobs = [self.jobs[r] for r in rows]
        self.generators = [self.generators[r] for r in rows]
        if not rows:
            self.mask = self.positions = self.logits = self.cache = None
            self.dora = None
            return
        index = torch.tensor(rows)
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]
        self.cache.batch_select_indices(index)

    def _forward(self, jobs: list[Generation], ids, mask, positions, cache) -> torch.Tensor:
        if self.lean is not None and ids.shape[1] == 1 and not any(j.adapter for j in jobs):
            return self.lean(ids, mask, positions, cache)
        extra, context = {}, nullcontext()
        if self.peft:
            alone = [j.adapter.key for j in jobs if j.adapter and j.adapter.alone]
            if alone:
                self.model.set_adapter(alone[0])
            elif not any(j.adapter for j in jobs):
                context = self.model.disable_adapter()  # the base alone (expert adapters do not take "__base__" rows)
            else:
                extra["adapter_names"] = [j.adapter.key if j.adapter else "__base__" for j in jobs]
        extra[cache_argument(type(self.model.get_base_model() if self.peft else self.model))] = cache
        with context:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1, **extra)
        return out.logits[:, -1].float()


def _adapter(job: Generation) -> str:
    """Whose keys and values a prompt has: the base model's or one adapter's."""
    return job.adapter.key if job.adapter else ""


def _pick(logits: torch.Tensor, sampling, generators) -> tuple[torch.Tensor, dict[int, Exception]]:
    """Greedy where temperature is 0, else nucleus sampling with each request's own generator (seeded);
    and the rows whose sampling failed, with why."""
    tokens, failed = logits.argmax(-1), {}
    for row, (settings, generator) in enumerate(zip(sampling, generators)):
        if generator is None:
            continue
        try:
            probs = torch.softmax(logits[row] / settings.temperature, -1)
            if settings.top_p < 1:
                ordered, order = probs.sort(descending=True)
                outside = ordered.cumsum(-1) - ordered > settings.top_p
                probs = probs.scatter(0, order, ordered.masked_fill(outside, 0))
            tokens[row] = torch.multinomial(probs, 1, generator=generator)[0]
        except Exception as err:  # e.g. probabilities that are not finite: this row fails, not the batch
            failed[row] = err
    return tokens, failed


def _pad_left_to_same(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(a.shape[1], b.shape[1])
    return F.pad(a, (width - a.shape[1], 0)), F.pad(b, (width - b.shape[1], 0))
