"""Keys and values of recent prompts, so a prompt that starts like an earlier one skips that part of prefill.

Requests to one deployment mostly share their opening: the system prompt, few-shot examples, the earlier
turns of a conversation. After a prefill the engine keeps each prompt's per-layer keys and values (one
row, real tokens only: positions count real tokens, so they do not depend on the batch's padding); a new
prompt looks for the entry sharing its longest prefix under the same adapter, starts from a copy of that
many positions and prefills only the rest. llama.cpp's server and vLLM do the same by default.

Bounded by bytes (`budget`), least recently used entries leave first. A prefix shorter than `min_tokens`
is not worth a lookup and copy; at least the prompt's last token is always prefilled, since its logits
pick the first generated token.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import torch

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape (1, kv heads, tokens, head dim)


class PrefixCache:
    def __init__(self, budget: int, min_tokens: int = 16):
        self.budget, self.min_tokens = budget, min_tokens
        self.entries: OrderedDict[tuple[str, tuple[int, ...]], Layers] = OrderedDict()
        self.bytes = 0
        self.hits = self.reused_tokens = 0

    def longest(self, adapter: str, ids: list[int]) -> tuple[int, Layers] | None:
        """The most positions of a cached prompt that `ids` starts with (its last token excluded), and its layers."""
        best, best_key, probe = 0, None, tuple(ids)
        for key in self.entries:
            if key[0] == adapter:
                shared = min(len(os.path.commonprefix([key[1], probe])), len(ids) - 1)
                if shared > best:
                    best, best_key = shared, key
        if best < self.min_tokens:
            return None
        self.entries.move_to_end(best_key)
        self.hits, self.reused_tokens = self.hits + 1, self.reused_tokens + best
        return best, self.entries[best_key]

    def add(self, adapter: str, ids: list[int], layers: Layers) -> None:
        """Keep `layers` (copied) as the keys and values of prompt `ids`; evict the oldest entries past the budget."""
        size = _size(layers)
        key = (adapter, tuple(ids))
        if len(ids) < self.min_tokens or size > self.budget or key in self.entries:
            return
        self.entries[key] = [(k.clone(), v.clone()) for k, v in layers]
        self.bytes += size
        while self.bytes > self.budget:
            _, dropped = self.entries.popitem(last=False)
            self.bytes -= _size(dropped)


def _size(layers: Layers) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
