"""Generation engine: one loaded model, any number of LoRA adapters on it, and a thread that batches.

Requests queue as `Generation`s (bounded: `submit` raises `Overloaded` when full). The engine thread runs a
continuous batch: waiting jobs join between decode steps, finished ones leave. Adapters load on first
use and the least recently used one is unloaded when more than `max_adapters` are resident; all model
access happens on the engine thread or under its lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path


from tuneloop.compat import GrowingLayer, growing_cache
from tuneloop.errors import TuneloopError
from tuneloop.models import load_model, load_tokenizer
from tuneloop.models.chat import stop_ids
from tuneloop.serve.batch import Batch
from tuneloop.serve.generation import AdapterRef, Generation, dora_key
from tuneloop.serve.column_major import layout_for_decoding
from tuneloop.serve.lean_decode import LeanDecoder
from tuneloop.serve.prefix_cache import PrefixCache

log = logging.getLogger(__name__)


class Overloaded(TuneloopError):
    """The queue is full; the client should retry later."""


class Engine:
    def __init__(self, ref: str | Path, *, max_batch: int = 16, max_queue: int = 64, max_adapters: int = 8,
                 prefix_cache_mb: int = 256):
        self.ref = str(ref)
        self.tokenizer = load_tokenizer(ref)
        self.model = load_model(ref)
        layout_for_decoding(self.model)
        self.lean = LeanDecoder.for_model(self.model)
        self.prefixes = PrefixCache(prefix_cache_mb << 20) if prefix_cache_mb and _full_attention(self.model) else None
        self.context = int(getattr(self.model.config, "max_position_embeddings", 2048))
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])  # the logits' width
        self.max_batch, self.max_queue, self.max_adapters = max_batch, max_queue, max_adapters
        self.end_ids = set(stop_ids(self.tokenizer))  # the template's end of turn and the end of sequence
        self.adapters: OrderedDict[str, AdapterRef] = OrderedDict()  # resident, least recently used first
        self.last_batch_size = self.peak_batch = 0
        self.tokens_per_second = 0.0
        self._waiting: deque[Generation] = deque()
        self._wake = threading.Condition()
        self._model_lock = threading.Lock()
        self._stopping = False
        self._batch: Batch | None = None
        self._thread = threading.Thread(target=self._run, name=f"engine:{Path(self.ref).name}", daemon=True)
        self._thread.start()

    # --- called from request handlers ---------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]

    def constraint_for(self, grammar: str):
        """A request's own matcher for `grammar` (raises GrammarError naming what cannot be compiled)."""
        from tuneloop.grammar import Constraint

        return Constraint(self.tokenizer, grammar, self.vocab_size)

    def submit(self, job: Generation) -> None:
        with self._wake:
            if self._stopping:
                raise Overloaded("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise Overloaded(f"{len(self._waiting)} requests are already waiting (queue limit {self.max_queue})")
            self._waiting.append(job)
            self._wake.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    def load_adapter(self, adapter: AdapterRef) -> None:
        with self._model_lock:
            self._ensure_loaded([adapter], self._batch)

    def unload_adapter(self, key: str) -> bool:
        with self._model_lock:
            if key not in self.adapters:
                return False
            if any(job.adapter and job.adapter.key == key for job in (self._batch.jobs if self._batch else [])):
                raise TuneloopError(f"adapter {key} is generating right now; unload it when its requests finish")
            self.model.delete_adapter(key)
            del self.adapters[key]
            return True

    def stop(self, timeout: float | None = None) -> None:
        """Finish every queued and running request, then end the engine thread; after `timeout` seconds,
        cancel what is left (each ends with finish_reason "cancelled")."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._wake:
                for job in [*self._waiting, *(self._batch.jobs if self._batch else [])]:
                    job.cancelled = True
                self._wake.notify()
            self._thread.join(30)

    # --- the engine thread --------------------------------------------------------------------------
    def _run(self) -> None:
        batch: Batch | None = None
        while True:
            with self._wake:
                while not self._waiting and not batch and not self._stopping:
                    self._wake.wait()
                if self._stopping and not self._waiting and not batch:
                    return
                joining = self._take(batch)
            with self._model_lock:
                batch = self._join(batch, joining)
                if batch:
                    batch = self._advance(batch)
                self._batch = batch

    def _take(self, batch: Batch | None) -> list[Generation]:
        """Waiting jobs that fit into the running batch (first come, first served; skip cancelled ones)."""
        room = self.max_batch - (len(batch) if batch else 0)
        taken, left = [], deque()
        # A running batch fixes its kind; otherwise the first job taken does.
        kind = (batch.dora,) if batch else None
        while self._waiting:
            job = self._waiting.popleft()
            if job.cancelled:
                job.finish_reason = "cancelled"
            elif len(taken) < room and (kind is None or kind == (dora_key(job),)):
                kind = (dora_key(job),)
                taken.append(job)
            else:
                left.append(job)
        self._waiting = left
        return taken

    def _join(self, batch: Batch | None, joining: list[Generation]) -> Batch | None:
        """Prefill the joining requests into the batch; a failure fails them alone, the running batch goes on."""
        if not joining:
            return batch
        try:
            self._ensure_loaded([job.adapter for job in joining if job.adapter], batch)
            batch = batch or Batch(self.model, self.tokenizer.pad_token_id, peft=False, end_ids=list(self.end_ids), lean=self.lean,
                                   prefixes=self.prefixes)
            # Loading the first adapter wraps the model (in place): point the batch at the wrapper.
            batch.model, batch.peft = self.model, hasattr(self.model, "peft_config")
            batch.join(joining)
        except Exception as err:
            log.exception("prefill failed")
            for job in joining:
                if not job.finished:
                    job.fail(f"generation failed: {err.__class__.__name__}: {err}")
        return batch if batch is not None and len(batch) else None

    def _advance(self, batch: Batch) -> Batch | None:
        """One decode step for every running request; a failed forward pass fails the batch, never the engine."""
        started, before = time.perf_counter(), len(batch)
        try:
            batch.step(lambda job, token: job.add(token, self.end_ids, self._decode))
        except Exception as err:
            log.exception("generation failed")
            for job in batch.jobs:
                if not job.finished:
                    job.fail(f"generation failed: {err.__class__.__name__}: {err}")
            return None
        self.last_batch_size, self.peak_batch = before, max(self.peak_batch, before)
        self.tokens_per_second = before / max(time.perf_counter() - started, 1e-9)
        return batch if len(batch) else None

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def _ensure_loaded(self, adapters: list[AdapterRef], batch: Batch | None) -> None:
        from peft import PeftModel

        for adapter in adapters:
            if adapter.key in self.adapters:
                self.adapters.move_to_end(adapter.key)
                continue
            if not (Path(adapter.path) / "adapter_config.json").is_file():
                raise TuneloopError(f"{adapter.path}: not a PEFT adapter folder (no adapter_config.json)")
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(adapter.path, adapter_name=adapter.key)
            else:
                self.model = PeftModel.from_pretrained(self.model, adapter.path, adapter_name=adapter.key).eval()
            self.adapters[adapter.key] = adapter
        in_use = {a.key for a in adapters} | {j.adapter.key for j in (batch.jobs if batch else []) if j.adapter}
        for key in [k for k in self.adapters if k not in in_use][: max(0, len(self.adapters) - self.max_adapters)]:
            self.model.delete_adapter(key)
            del self.adapters[key]


def _full_attention(model) -> bool:
    """Every cache layer keeps every position (no sliding window), so a prompt's keys can be reused whole."""
    return all(type(layer) is GrowingLayer for layer in growing_cache(model.config).layers)
