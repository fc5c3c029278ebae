"""Models, a library any stage may use: resolve a name to weights on disk, load them, encode chats with the
model's template, embed texts (MiniLM), and export merged folders and GGUF files."""

from tuneloop.models.chat import Encoded, encode_chat, last_text, render_prompt
from tuneloop.models.load import is_full_model, load_model, load_tokenizer, trained_weights, weights_folder
from tuneloop.models.resolve import EMBEDDED, resolve_model

__all__ = ["EMBEDDED", "Encoded", "encode_chat", "last_text", "is_full_model", "load_model", "load_tokenizer", "render_prompt", "resolve_model", "trained_weights", "weights_folder"]
