"""Structured outputs and tool calls for a chat request: which grammar constrains the answer, and how the
answer's text turns back into OpenAI's `message.tool_calls` (whole, or as stream deltas).

- `tool_choice` "required" or a named function: the answer must be calls (to that function), every one valid;
- tools with `tool_choice` "auto" (the default): free text, but an opened <tool_call> must be a valid call;
- otherwise `response_format` json_object / json_schema: one JSON value valid under the schema.
"""

from __future__ import annotations

import uuid

from tuneloop.grammar import GrammarError, json_grammar, tool_grammar
from tuneloop.models.tools import CALL, OPEN, parse_calls
from tuneloop.serve.schemas import ChatRequest, NamedTool

CLOSE_TAG = "</tool_call>"


def grammar_for(body: ChatRequest) -> tuple[str | None, str]:
    """(the grammar the answer must follow or None, the request field it comes from)."""
    if body.calls_tools():
        functions = [t.function.model_dump(exclude_none=True) for t in body.tools]
        if isinstance(body.tool_choice, NamedTool):
            chosen = [f for f in functions if f["name"] == body.tool_choice.function.name]
            return tool_grammar(chosen, required=True, parallel=False), "tool_choice"
        return tool_grammar(functions, required=body.tool_choice == "required", parallel=body.parallel_tool_calls), "tools"
    rf = body.response_format
    if rf is None or rf.type == "text":
        return None, ""
    if rf.type == "json_object":
        return json_grammar(None), "response_format"
    return json_grammar(rf.json_schema.schema_), "response_format.json_schema.schema"


def culprit(body: ChatRequest, field: str, check) -> str:
    """The field to name for a grammar that did not compile: with tools, the first function whose parameters
    alone fail `check` (a callable that compiles a grammar, raising GrammarError)."""
    if field in ("tools", "tool_choice"):
        for i, tool in enumerate(body.tools or []):
            try:
                check(json_grammar(tool.function.parameters))
            except GrammarError:
                return f"tools[{i}].function.parameters"
    return field


def message(text: str, body: ChatRequest, finish: str) -> tuple[dict, str]:
    """The assistant message for a finished answer, and its finish_reason ("tool_calls" when it made calls)."""
    if not body.calls_tools():
        return {"role": "assistant", "content": text}, finish
    content, calls = parse_calls(text, {t.function.name for t in body.tools})
    if not calls:
        return {"role": "assistant", "content": text}, finish
    return {"role": "assistant", "content": content, "tool_calls": [_call(c) for c in calls]}, "tool_calls" if finish == "stop" else finish


class ToolStream:
    """Turns streamed text into content deltas and whole tool calls: text that may be the start of a
    <tool_call> is held back; a closed block is sent as one call (OpenAI's first delta with id and name,
    then its arguments); a block that does not parse as a call goes out as text."""

    def __init__(self, names: set[str]):
        self.names, self.buffer, self.calls = names, "", 0

    def feed(self, delta: str) -> list[dict]:
        self.buffer += delta
        return self._drain(final=False)

    def finish(self) -> list[dict]:
        return self._drain(final=True)

    def _drain(self, final: bool) -> list[dict]:
        out = []
        while self.buffer:
            start = self.buffer.find(OPEN[:-1])
            if start < 0:
                keep = 0 if final else _partial_tag(self.buffer)
                text, self.buffer = self.buffer[: len(self.buffer) - keep], self.buffer[len(self.buffer) - keep:]
                if text and not (self.calls and not text.strip()):  # newlines between calls are not content
                    out.append({"content": text})
                break
            if start:
                text, self.buffer = self.buffer[:start], self.buffer[start:]
                if not (self.calls and not text.strip()):
                    out.append({"content": text})
            end = self.buffer.find(CLOSE_TAG)
            if end < 0:
                if final:
                    out.append({"content": self.buffer})
                    self.buffer = ""
                break
            block, self.buffer = self.buffer[: end + len(CLOSE_TAG)], self.buffer[end + len(CLOSE_TAG):]
            _, calls = parse_calls(block, self.names) if CALL.fullmatch(block) else (None, None)
            if not calls:
                out.append({"content": block})
                continue
            call = _call(calls[0])
            out.append({"tool_calls": [{"index": self.calls, "id": call["id"], "type": "function",
                                        "function": {"name": call["function"]["name"], "arguments": ""}}]})
            out.append({"tool_calls": [{"index": self.calls, "function": {"arguments": call["function"]["arguments"]}}]})
            self.calls += 1
        return out


def _call(call: dict) -> dict:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


def _partial_tag(text: str) -> int:
    """Length of the end of `text` that could still grow into "<tool_call"."""
    tag = OPEN[:-1]
    return next((size for size in range(min(len(tag) - 1, len(text)), 0, -1) if tag.startswith(text[-size:])), 0)
