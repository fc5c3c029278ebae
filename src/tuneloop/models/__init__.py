"""Models, a library any stage may use: resolve a name to weights on disk, load them, encode chats with the
model's template, embed texts (MiniLM), and export merged folders and GGUF files.

The names below load on first use (PEP 562), so that importing `tuneloop.models.resolve` to check a model
name does not import torch and transformers: a command fails on a typo in a second, not after several.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Encoded": "chat", "encode_chat": "chat", "last_text": "chat", "render_prompt": "chat",
    "is_full_model": "load", "load_model": "load", "load_tokenizer": "load", "trained_weights": "load", "weights_folder": "load",
    "EMBEDDED": "resolve", "resolve_model": "resolve",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
