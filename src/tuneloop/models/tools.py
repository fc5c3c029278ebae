"""Tool calls as text, one convention for training, evaluation and serving (so a model is asked for exactly
what it learnt): the Hermes format Qwen and NousResearch models use.

- the tool definitions go into the system message, as JSON inside <tools></tools>;
- an assistant's calls are written after its text, each as <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>;
- tool results become a user turn of <tool_response>\n...\n</tool_response> blocks.

Conversations are converted to plain system/user/assistant messages before the chat template sees them, so
any template renders them, including ones (like SmolLM2's) that know nothing of tools.
"""

from __future__ import annotations

import json
import re
from typing import Any

OPEN, CLOSE = "<tool_call>\n", "\n</tool_call>"
CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)

TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within <tool_call></tool_call> "
    'XML tags:\n<tool_call>\n{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def functions(tools: list[dict] | None) -> list[dict]:
    """The function definitions of OpenAI `tools` entries ({"type": "function", "function": {...}})."""
    return [t["function"] for t in tools or []]


def call_text(name: str, arguments: dict) -> str:
    return OPEN + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + CLOSE


def plain_messages(messages: list[dict], tools: list[dict] | None = None) -> list[dict]:
    """`messages` (OpenAI chat, possibly with tool calls and tool results) as system/user/assistant messages
    whose content is text; training keeps each message's `weight`."""
    out: list[dict] = []
    for message in messages:
        role, content = message["role"], _text(message.get("content"))
        if role == "tool":
            block = f"<tool_response>\n{content}\n</tool_response>"
            if out and out[-1].get("_tool"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "_tool": True})
            continue
        if role == "assistant" and message.get("tool_calls"):
            calls = [call_text(c["function"]["name"], _arguments(c["function"].get("arguments"))) for c in message["tool_calls"]]
            content = "\n".join([content, *calls] if content else calls)
        out.append({"role": role, "content": content, **({"weight": message["weight"]} if "weight" in message else {})})
    for message in out:
        message.pop("_tool", None)
    if tools:
        listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        prompt = TOOLS_PROMPT.format(tools=listed)
        if out and out[0]["role"] == "system":
            out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def answer_text(message: dict) -> str:
    """An assistant message as the model writes it (its text, then its calls): a reference answer."""
    return plain_messages([message])[0]["content"]


def parse_calls(text: str, names: set[str]) -> tuple[str | None, list[dict] | None]:
    """(content, calls) from a model's answer: the <tool_call> blocks that name a declared function with a JSON
    object of arguments become calls ({"name", "arguments": JSON text}), the text before them the content.
    When any block is malformed the whole answer stays text (calls None), as vLLM's Hermes parser does."""
    blocks = list(CALL.finditer(text))
    if not blocks:
        return text, None
    calls = []
    for block in blocks:
        try:
            call = json.loads(block.group(1))
        except json.JSONDecodeError:
            return text, None
        if not isinstance(call, dict) or call.get("name") not in names or not isinstance(call.get("arguments", {}), dict):
            return text, None
        calls.append({"name": call["name"], "arguments": json.dumps(call.get("arguments", {}), ensure_ascii=False)})
    content = text[: blocks[0].start()].strip()
    return content or None, calls


def _arguments(arguments: Any) -> dict:
    """A call's arguments as an object (OpenAI sends them as a JSON string; checked before this point)."""
    if isinstance(arguments, str):
        return json.loads(arguments) if arguments.strip() else {}
    return arguments or {}


def _text(content: Any) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)
