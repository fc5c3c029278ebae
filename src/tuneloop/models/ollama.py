"""An Ollama `Modelfile` beside an exported GGUF, so `ollama create NAME -f Modelfile` gives the model its chat
format, stop tokens, defaults and system prompt.

Ollama templates are Go templates, not Jinja. Rather than translate Jinja, the conversation is rendered as tuneloop
renders it for training (models/chat.py, `render_chat`) on a probe conversation (system, user, assistant) and cut
at the probe texts: what comes before and after each is that role's prefix and suffix, split between two turns
after the end-of-turn token (or, where the user turn has none, as Mistral's `[/INST]`, where the generation
prompt ends), and the generation prompt is what opens the answer. A system text that lands inside the first user
turn (Gemma 2 and Mistral, folded by tuneloop; Gemma 3, folded by its own template) is written the same way: before
the first user message's content. A template it cannot cut is refused with a message, never written wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import TuneloopError

ROLES = ("system", "user", "assistant")
_PROBES = {"system": "Zq7 probe system", "user": "Zq7 probe user", "assistant": "Zq7 probe answer"}
DEFAULTS = {"temperature": 0.0, "num_ctx": 2048}  # greedy, as tuneloop evaluates; the context it trains within


@dataclass(frozen=True)
class Turns:
    """Each role's text before and after its content, what opens the model's answer, and, where the system text
    goes into the first user turn, what separates it from the user's (None: the system message is a turn)."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str
    fold: str | None = None
    opening: str = ""  # text before the first turn (a BOS the template writes and the tokenizer does not add)
    default_system: str | None = None  # the system text the template writes when a conversation has none (SmolLM2)


def read_turns(tokenizer) -> Turns:
    from tuneloop.models.chat import render_chat, traits
    from tuneloop.models.gguf_vocab import adds_bos

    messages = [{"role": role, "content": _PROBES[role]} for role in ROLES]
    text = render_chat(tokenizer, messages)
    asking = render_chat(tokenizer, messages[:2], generation_prompt=True)
    # A BOS the template writes opens the conversation once; llama.cpp prepends it itself where the tokenizer adds it
    # (the GGUF says so), else the template must write it.
    lead = tokenizer.bos_token if tokenizer.bos_token and text.startswith(tokenizer.bos_token) else ""
    text, asking = text[len(lead):], asking[len(lead):]
    opening = "" if adds_bos(tokenizer) else lead
    end = traits(tokenizer).end_of_turn
    start, between_su, between_ua, after = _cut(text, [_PROBES[role] for role in ROLES])
    fold = None
    if end not in between_su:  # the system text sits in the user turn, before the user's
        fold, prefix = between_su, {"system": "", "user": start}
        suffix = {"system": ""}
    else:
        system_suffix, user_prefix = _split(between_su, end)
        prefix, suffix = {"system": start, "user": user_prefix}, {"system": system_suffix}
    # What the generation prompt adds after the user's text: the user turn's end and the answer's opening.
    head = start + _PROBES["system"] + between_su + _PROBES["user"]
    if not asking.startswith(head):
        raise TuneloopError("Modelfile: the chat template renders the prompt differently from the conversation; write TEMPLATE by hand")
    closing = asking[len(head):]
    if end in between_ua:
        suffix["user"], prefix["assistant"] = _split(between_ua, end)
    else:  # Mistral: `[/INST]` ends the user turn, and the answer follows with nothing of its own but a space
        shared = len(closing) if between_ua.startswith(closing) else 0
        suffix["user"], prefix["assistant"] = between_ua[:shared], between_ua[shared:]
    generation = closing[len(suffix["user"]):]
    stripped = after.lstrip(" \n")
    if not stripped.startswith(end) or not closing.startswith(suffix["user"]) or not prefix["assistant"].startswith(generation):
        raise TuneloopError(f"Modelfile: could not read the chat template's turns (closed by {end!r}) or generation prompt; "
                            f"write TEMPLATE by hand")
    cut = len(after) - len(stripped) + len(end)
    while cut < len(after) and after[cut] in "\n ":
        cut += 1
    trailer = after[cut:]
    # Phi-3 ends a finished conversation with its end-of-sequence token: not part of any turn.
    if trailer.strip() not in ("", tokenizer.eos_token):
        raise TuneloopError(f"Modelfile: the chat template writes {trailer!r} after the last turn; write TEMPLATE by hand")
    suffix["assistant"] = after[:cut]
    # A template that writes a system turn of its own into a conversation without one: that text is the default.
    alone = render_chat(tokenizer, messages[1:2], generation_prompt=True)[len(lead):]
    default = None
    if fold is None and prefix["system"] and alone.startswith(prefix["system"]) and not alone.startswith(prefix["user"]):
        default = alone[len(prefix["system"]):].partition(suffix["system"])[0]
    turns = Turns(prefix, suffix, generation, fold, opening, default)
    for check in _CHECKS:  # with and without a system message, over several turns
        shown = check if default is None or check[0]["role"] == "system" else [{"role": "system", "content": default}, *check]
        if lead + _render(turns, shown)[len(opening):] != render_chat(tokenizer, check, generation_prompt=True):
            raise TuneloopError("Modelfile: the turns read from the chat template do not render other conversations as it "
                                "does; write TEMPLATE by hand")
    return turns


_CHECKS = [
    [{"role": "user", "content": "Where is it?"}, {"role": "assistant", "content": "On its way."}, {"role": "user", "content": "When?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
     {"role": "user", "content": "Bye"}],
]


def _render(turns: Turns, messages: list[dict]) -> str:
    """What go_template's template renders for `messages`, in Python."""
    out = []
    for i, message in enumerate(messages):
        role = message["role"]
        if role == "system" and turns.fold is not None:
            continue
        folded = messages[0]["content"] + turns.fold if turns.fold is not None and role == "user" and i == 1 and messages[0]["role"] == "system" else ""
        out.append(turns.prefix[role] + folded + message["content"] + turns.suffix[role])
    return turns.opening + "".join(out) + turns.generation


def _cut(text: str, probes: list[str]) -> list[str]:
    """The text around and between the probes, which must come once each, in order."""
    pieces, rest = [], text
    for probe in probes:
        head, found, rest = rest.partition(probe)
        if not found or any(p in head for p in probes):
            raise TuneloopError("Modelfile: the chat template does not render each message once, in order; write TEMPLATE by hand")
        pieces.append(head)
    return [*pieces, rest]


def _split(between: str, end: str) -> tuple[str, str]:
    """Text between two turns, cut after the first one's end-of-turn token and the newlines or spaces after it."""
    cut = between.index(end) + len(end)
    while cut < len(between) and between[cut] in "\n ":
        cut += 1
    return between[:cut], between[cut:]


# The folded system text, written before the first user message's content when the conversation opens with it.
FOLD_CONDITION = '{{ if and (eq $i 1) (eq (index $.Messages 0).Role "system") }}'


def go_template(turns: Turns) -> str:
    """The Go template Ollama renders for a conversation (.Messages), ending with the answer's opening."""
    # No `{{-` trimming: the turns' newlines are part of the format.
    fold = f'{FOLD_CONDITION}{{{{ (index $.Messages 0).Content }}}}{_go(turns.fold)}{{{{ end }}}}' if turns.fold is not None else ""
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go(turns.prefix[role])}'
        + ("" if role == "system" and turns.fold is not None else
           (fold if role == "user" else "") + f'{{{{ .Content }}}}{_go(turns.suffix[role])}')
        for i, role in enumerate(ROLES)
    )
    return f"{_go(turns.opening)}{{{{ range $i, $_ := .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{_go(turns.generation)}"


def write_modelfile(path: Path, gguf: Path, tokenizer, system_prompt: str | None, stops: list[str], context: int | None = None) -> Path:
    """Write the Modelfile at `path` for the GGUF file `gguf` in the same folder."""
    turns = read_turns(tokenizer)
    template = go_template(turns)
    lines = [f"# Written by tuneloop: ollama create NAME -f {path.name}", f"FROM ./{Path(gguf).name}", f'TEMPLATE """{template}"""']
    system_prompt = system_prompt or turns.default_system  # what the chat template writes when there is none
    if system_prompt:
        if '"""' in system_prompt:
            raise TuneloopError('Modelfile: the system prompt contains """, which a Modelfile cannot quote')
        lines.append(f'SYSTEM """{system_prompt}"""')
    params = {**DEFAULTS, **({"num_ctx": min(context, 8192)} if context else {})}
    lines += [f"PARAMETER {key} {value}" for key, value in params.items()]
    lines += [f'PARAMETER stop "{stop.replace(chr(34), chr(92) + chr(34))}"' for stop in stops]
    path.write_text("\n".join(lines) + "\n")
    return path


def _go(text: str) -> str:
    """Literal text inside a Go template (only `{{` would be read as an action)."""
    return text.replace("{{", '{{ "{{" }}')
