"""Chat-template encoding shared by training, evaluation and serving, so all three see the same text.

Training labels cover the assistant turns only, each up to and including the end-of-turn token, so
the model learns to stop; everything else (system, user, template scaffolding) is masked with -100,
and so are assistant turns marked `"weight": 0` (OpenAI's convention for turns not to learn from).
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from tuneloop.errors import TuneloopError
from tuneloop.models.tools import plain_messages

IGNORE = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def n_target(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def last_text(messages: list[dict], role: str = "user") -> str:
    """The content of the last `role` message ("" if none); OpenAI content-part lists are joined."""
    content = next((m.get("content") for m in reversed(messages) if m.get("role") == role), "") or ""
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The exact text the model sees before it starts its answer (`tools`: OpenAI function definitions,
    written into the system message; see models/tools.py)."""
    return tokenizer.apply_chat_template(plain_messages(messages, tools), tokenize=False, add_generation_prompt=True)


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], max_len: int, tools: list[dict] | None = None) -> Encoded:
    """Token ids and labels for a conversation; labels are -100 outside assistant answers (tool calls included)."""
    eot = tokenizer.eos_token
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    messages = plain_messages(messages, tools)
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]  # templates see no extra keys

    def add(text: str, train: bool) -> None:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids.extend(piece)
        labels.extend(piece if train else [IGNORE] * len(piece))

    # Render growing prefixes of the conversation and tokenize only the new text each time, so the
    # boundary between prompt and answer is exact whatever the template looks like.
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(plain[:i], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(plain[: i + 1], tokenize=False)
        if not (prompt.startswith(rendered) and full.startswith(prompt)):
            raise TuneloopError("the model's chat template does not render conversations prefix by prefix")
        answer = full[len(prompt):]
        end = answer.find(eot)
        end = len(answer) if end < 0 else end + len(eot)
        add(prompt[len(rendered):], train=False)
        add(answer[:end], train=message.get("weight", 1) != 0)
        add(answer[end:], train=False)
        rendered = full

    truncated = len(ids) > max_len
    return Encoded(ids[:max_len], labels[:max_len], truncated)
