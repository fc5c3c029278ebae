"""Chat-template encoding shared by training, evaluation and serving, so all three see the same text.

Training labels cover the assistant turns only, each up to and including the end-of-turn token, so
the model learns to stop; everything else (system, user, template scaffolding) is masked with -100,
and so are assistant turns marked `"weight": 0` (OpenAI's convention for turns not to learn from).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase

from tuneloop.errors import TuneloopError
from tuneloop.models.tools import plain_messages

IGNORE = -100
_PROBE = "Zq7 probe answer"


@dataclass(frozen=True)
class Traits:
    """What a chat template does, read by rendering probe conversations once per template."""

    end_of_turn: str  # the token that closes an assistant turn: trained, and where decoding stops
    fold_system: bool  # the template refuses or moves a system message: put its text in the first user turn


_TRAITS: dict[tuple, Traits] = {}
_TRAITS_LOCK = threading.Lock()


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


def traits(tokenizer: PreTrainedTokenizerBase) -> Traits:
    key = (tokenizer.chat_template, tokenizer.eos_token, len(tokenizer))
    with _TRAITS_LOCK:
        if key not in _TRAITS:
            _TRAITS[key] = _read_traits(tokenizer)
        return _TRAITS[key]


def end_of_turn_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.convert_tokens_to_ids(traits(tokenizer).end_of_turn)


def stop_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Token ids that end an answer: the template's end of turn and the tokenizer's end of sequence."""
    ids = {end_of_turn_id(tokenizer), tokenizer.eos_token_id}
    return sorted(i for i in ids if isinstance(i, int) and i >= 0)


def render_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool = False) -> str:
    """The chat template applied to plain role/content messages (the system text folded into the first user
    turn for templates that cannot keep it, see Traits)."""
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]  # templates see no extra keys
    if plain and plain[0]["role"] == "system" and traits(tokenizer).fold_system:
        plain = _folded(plain)
    return tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=generation_prompt)


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The exact text the model sees before it starts its answer (`tools`: OpenAI function definitions,
    written into the system message; see models/tools.py)."""
    return render_chat(tokenizer, plain_messages(messages, tools), generation_prompt=True)


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], max_len: int, tools: list[dict] | None = None) -> Encoded:
    """Token ids and labels for a conversation; labels are -100 outside assistant answers (tool calls included)."""
    messages = plain_messages(messages, tools)
    if messages and messages[0]["role"] == "system" and traits(tokenizer).fold_system:
        messages = _folded(messages)
    return _encode(tokenizer, messages, traits(tokenizer).end_of_turn, max_len)


def _encode(tokenizer, messages: list[dict], eot: str, max_len: int) -> Encoded:
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""

    def add(text: str, train: bool) -> None:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        ids.extend(piece)
        labels.extend(piece if train else [IGNORE] * len(piece))

    # Render growing prefixes of the conversation and tokenize only the new text each time, so the
    # boundary between prompt and answer is exact whatever the template looks like. What a template
    # writes after a turn's end-of-turn token may differ between the middle and the end of a
    # conversation (Phi-3 ends the whole text with its end-of-sequence token): it is taken from the
    # next prompt, and from the full rendering after the last answer.
    full = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(_plain(messages[:i]), tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(_plain(messages[: i + 1]), tokenize=False)
        if not (prompt.startswith(rendered) and full.startswith(prompt)):
            raise TuneloopError("the model's chat template does not render conversations prefix by prefix")
        answer = full[len(prompt):]
        end = answer.find(eot)
        end = len(answer) if end < 0 else end + len(eot)
        add(prompt[len(rendered):], train=False)
        add(answer[:end], train=message.get("weight", 1) != 0)
        rendered = prompt + answer[:end]
    add(full[len(rendered):], train=False)

    truncated = len(ids) > max_len
    return Encoded(ids[:max_len], labels[:max_len], truncated)


def _plain(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _folded(messages: list[dict]) -> list[dict]:
    """The system message's text put before the first user turn's (Gemma 3's own template does this)."""
    system, rest = messages[0], [dict(m) for m in messages[1:]]
    first_user = next((m for m in rest if m["role"] == "user"), None)
    if first_user is None:
        return [{**system, "role": "user"}, *rest]
    first_user["content"] = f"{system['content']}\n\n{first_user['content']}"
    return rest


def _read_traits(tokenizer) -> Traits:
    """Render a probe conversation: what follows the answer is the end-of-turn token; a system message that
    raises, or does not render prefix by prefix over two turns, is folded."""
    answer = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _PROBE}]
    prompt = tokenizer.apply_chat_template(answer[:1], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(answer, tokenize=False)
    after = full[len(prompt):].split(_PROBE, 1)[-1].lstrip(" ")
    specials = sorted({*tokenizer.all_special_tokens, *(t.content for t in tokenizer.added_tokens_decoder.values())}, key=len, reverse=True)
    end = next((t for t in specials if t and after.startswith(t)), None) or tokenizer.eos_token
    system = [{"role": "system", "content": "Be brief."}, *answer, {"role": "user", "content": "Again"},
              {"role": "assistant", "content": _PROBE}]
    try:
        _encode(tokenizer, system, end, 1 << 20)
        fold = False
    except (TuneloopError, TemplateError):
        fold = True
    return Traits(end_of_turn=end, fold_system=fold)
