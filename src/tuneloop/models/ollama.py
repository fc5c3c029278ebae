"""An Ollama `Modelfile` beside an exported GGUF, so `ollama create NAME -f Modelfile` gives the model its chat
format, stop tokens, defaults and system prompt.

Ollama templates are Go templates, not Jinja. Rather than translate Jinja, the chat template is rendered on a
probe conversation (system, user, assistant) and cut at each end-of-turn token: what comes before and after
each probe text is that role's prefix and suffix, and the generation prompt is the assistant's prefix. This holds
for templates that wrap every turn the same way (ChatML as in SmolLM2 and Qwen, Llama 3, Mistral's newer
templates, Phi-3); a template it cannot cut is refused with a message, never written wrong.
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
    """Each role's text before and after its content, and what opens the model's answer."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str


def read_turns(tokenizer) -> Turns:
    from tuneloop.models.chat import render_chat, traits

    if traits(tokenizer).fold_system:
        raise TuneloopError("Modelfile: this chat template has no system turn (it folds the system text into the user's); "
                            "write the Modelfile's TEMPLATE by hand")
    messages = [{"role": role, "content": _PROBES[role]} for role in ROLES]
    text = render_chat(tokenizer, messages)
    asking = render_chat(tokenizer, messages[:2], generation_prompt=True)
    from tuneloop.models.gguf_export import adds_bos

    if adds_bos(tokenizer) and text.startswith(tokenizer.bos_token):  # llama.cpp prepends it itself, as the GGUF says
        text, asking = text[len(tokenizer.bos_token):], asking[len(tokenizer.bos_token):]
    end = traits(tokenizer).end_of_turn
    prefix, suffix, rest = {}, {}, text
    for role in ROLES:
        head, found, tail = rest.partition(_PROBES[role])
        cut = tail.find(end)
        if not found or cut < 0 or any(p in head for p in _PROBES.values()):
            raise TuneloopError(f"Modelfile: the chat template does not close the {role} turn with {end!r}; write TEMPLATE by hand")
        after = cut + len(end)
        while after < len(tail) and tail[after] in "\n ":
            after += 1
        prefix[role], suffix[role], rest = head, tail[:after], tail[after:]
    opened = asking[len(prefix["system"]) + len(_PROBES["system"]) + len(suffix["system"]) + len(prefix["user"])
                    + len(_PROBES["user"]) + len(suffix["user"]):]
    if not opened.strip() or not asking.endswith(opened) or rest.strip():
        raise TuneloopError("Modelfile: could not read the chat template's generation prompt; write TEMPLATE by hand")
    return Turns(prefix, suffix, opened)


def go_template(turns: Turns) -> str:
    """The Go template Ollama renders for a conversation (.Messages), ending with the answer's opening."""
    # No `{{-` trimming: the turns' newlines are part of the format.
    branches = "".join(
        f'{{{{ {"if" if i == 0 else "else if"} eq .Role "{role}" }}}}{_go(turns.prefix[role])}{{{{ .Content }}}}{_go(turns.suffix[role])}'
        for i, role in enumerate(ROLES)
    )
    return f"{{{{ range .Messages }}}}{branches}{{{{ end }}}}{{{{ end }}}}{_go(turns.generation)}"


def write_modelfile(path: Path, gguf: Path, tokenizer, system_prompt: str | None, stops: list[str], context: int | None = None) -> Path:
    """Write the Modelfile at `path` for the GGUF file `gguf` in the same folder."""
    template = go_template(read_turns(tokenizer))
    lines = [f"# Written by tuneloop: ollama create NAME -f {path.name}", f"FROM ./{Path(gguf).name}", f'TEMPLATE """{template}"""']
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
