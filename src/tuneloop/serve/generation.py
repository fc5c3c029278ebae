"""One generation request inside the engine: its prompt, sampling settings, and the text it has produced.

The engine thread feeds a generation one token at a time (`Generation.add`); it turns tokens into text deltas,
applies stop strings without ever sending a partial stop string, and reports events through `emit`,
which the HTTP side hands over to its event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA/DoRA adapter folder, keyed by an immutable name (a registry `name:version`)."""

    key: str
    path: str
    dora: bool = False
    experts: bool = False  # adapts a mixture-of-experts model's fused expert weights (peft's target_parameters)

    @property
    def alone(self) -> bool:
        """PEFT cannot mix this adapter with others in one batch (DoRA, or expert weights)."""
        return self.dora or self.experts


def dora_key(job: Generation) -> str | None:
    """The adapter a job needs when PEFT cannot mix it with others in a batch (DoRA, expert LoRA); None for plain
    LoRA or the base."""
    return job.adapter.key if job.adapter and job.adapter.alone else None


# Below this temperature sampling is greedy: dividing logits by a smaller number overflows to inf (and the
# distribution is one token anyway).
GREEDY_BELOW = 1e-4


@dataclass
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def generator(self) -> torch.Generator | None:
        if self.temperature < GREEDY_BELOW:
            return None
        generator = torch.Generator()
        generator.manual_seed(self.seed if self.seed is not None else torch.seed())
        return generator


@dataclass
class Generation:
    prompt_ids: list[int]
    max_tokens: int
    emit: Callable[[str, Any], None]  # ("delta", text) ... then ("done", Generation) or ("error", message)
    sampling: Sampling = field(default_factory=Sampling)
    stop: list[str] = field(default_factory=list)
    adapter: AdapterRef | None = None
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    _sent: int = 0
    generator: torch.Generator | None = field(init=False, default=None)
    counted: int | None = None  # tokens an external engine reported generating (it does not hand us the ids)
    # The grammar the answer must follow (Lark text, tuneloop/grammar.py), and this engine's matcher for it.
    grammar: str | None = None
    constraint: Any = None
    status: int = 500  # the HTTP status of a failure: 400 when the request's own grammar led nowhere

    def __post_init__(self) -> None:
        # Made here, in the request's thread: a seed the generator refuses fails this request, not the batch.
        self.generator = self.sampling.generator()

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, token: int, end_ids: set[int], decode: Callable[[list[int]], str]) -> bool:
        """Take the next token; returns True when the job is finished."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        if self.cancelled:
            self.finish_reason = "cancelled"
            return True
        if token in end_ids:
            return self._finish("stop")
        if self.constraint is not None:
            self.constraint.take(token)  # raises if the token breaks the grammar: this request fails
        self.tokens.append(token)
        text = decode(self.tokens)
        cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            self.text = text[:cut]
            return self._finish("stop")
        self.text = text
        if self.constraint is not None and self.constraint.done:
            return self._finish("stop")
        if len(self.tokens) >= self.max_tokens:
            return self._finish("length")
        if not text.endswith("\ufffd"):  # wait for the rest of a multi-byte character
            self._send(len(text) - _held_back(text, self.stop))
        return False

    @property
    def completion_tokens(self) -> int:
        return self.counted if self.counted is not None else len(self.tokens)

    def add_text(self, delta: str) -> None:
        """Text an external engine generated (it applies stop strings itself): pass it on as it comes."""
        if self.first_token_at is None:
            self.first_token_at = time.perf_counter()
        self.text += delta
        self._send(len(self.text))

    def finish_external(self, reason: str, completion_tokens: int) -> None:
        self.counted = completion_tokens
        self._finish(reason)

    def fail(self, message: str, status: int = 500) -> None:
        self.finish_reason, self.status = "error", status
        self.emit("error", message)

    def _finish(self, reason: str) -> bool:
        self.finish_reason = reason
        self._send(len(self.text))
        self.emit("done", self)
        return True

    def _send(self, upto: int) -> None:
        if upto > self._sent:
            self.emit("delta", self.text[self._sent:upto])
            self._sent = upto


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest
