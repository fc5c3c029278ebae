"""Generation engine behind the HTTP API: one loaded model, chat template, stop handling, usage counts.

Requests are served one at a time under a lock (a model is not safe to call from two threads);
batching across requests comes with the serving issue.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from tuneloop.models import load_model, load_tokenizer, render_prompt


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"


class Engine:
    def __init__(self, base_model: str, adapter: Path | None = None, system_prompt: str | None = None):
        self.base_model = base_model
        self.system_prompt = system_prompt
        self.tokenizer = load_tokenizer(base_model)
        self.model = load_model(base_model, adapter=adapter)
        self._lock = threading.Lock()

    def chat(self, messages: list[dict], **options) -> Completion:
        # A model fine-tuned with a system prompt is served with it unless the client sends its own.
        if self.system_prompt and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.system_prompt}, *messages]
        return self.complete(render_prompt(self.tokenizer, messages), **options)

    @torch.inference_mode()
    def complete(self, prompt: str, max_tokens: int = 256, temperature: float = 1.0, top_p: float = 1.0,
                 stop: list[str] | None = None, seed: int | None = None) -> Completion:
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        sampling = temperature > 0
        with self._lock:
            if seed is not None:
                torch.manual_seed(seed)
            output = self.model.generate(
                **inputs, max_new_tokens=max_tokens, do_sample=sampling,
                temperature=temperature if sampling else None, top_p=top_p if sampling else None, top_k=None,
                pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id,
            )
        new = output[0, inputs["input_ids"].shape[1]:].tolist()
        ended = bool(new) and new[-1] == self.tokenizer.eos_token_id
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in stop or []) if i >= 0), default=-1)
        if cut >= 0:
            text, ended = text[:cut], True
        return Completion(text, inputs["input_ids"].shape[1], len(new), "stop" if ended else "length")
