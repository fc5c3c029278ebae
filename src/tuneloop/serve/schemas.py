"""OpenAI request bodies for /v1/chat/completions and /v1/completions, validated with pydantic.

Fields OpenAI clients send that we do not use (frequency_penalty, logit_bias, ...) are accepted and
ignored; fields we cannot honour in a way the client would notice (n > 1, logprobs) are refused.

Every value has an explicit bound, so nothing a client sends reaches the tokenizer, the sampler or the
database unchecked: finite numbers only, lengths and counts capped (OpenAI's own limits where it has
them: 4 stop strings, 16 metadata pairs of 64/512 characters), a seed within torch's 64-bit range.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


NAME = 256  # characters in a model name, a user id, a stop string
MAX_MESSAGES = 2048
MAX_PARTS = 64
MAX_TOOLS = 128  # OpenAI's limit on tools per request
SEED = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field("{}", max_length=1_000_000)  # JSON text, as OpenAI sends it

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, arguments: str) -> str:
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as err:
            raise ValueError(f"arguments is not JSON ({err.msg} at character {err.pos})") from None
        if not isinstance(parsed, dict):
            raise ValueError("arguments must be a JSON object")
        return arguments


class ToolCall(BaseModel):
    id: str = Field(min_length=1, max_length=NAME)
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_PARTS)] | None = None
    tool_calls: Annotated[list[ToolCall], Field(min_length=1, max_length=MAX_TOOLS)] | None = None
    tool_call_id: str | None = Field(None, min_length=1, max_length=NAME)

    @model_validator(mode="after")
    def _shape(self) -> Message:
        if self.tool_calls is not None and self.role != "assistant":
            raise ValueError("only assistant messages have tool_calls")
        if (self.role == "tool") != (self.tool_call_id is not None):
            raise ValueError("a tool message needs tool_call_id (the id of the call it answers), and only a tool message has one")
        if self.content is None and self.tool_calls is None:
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def plain(self) -> dict:
        """As models/tools.py takes it (a developer message is a system message)."""
        role = "system" if self.role == "developer" else self.role
        message = {"role": role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class Function(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(None, max_length=NAME * 64)
    parameters: dict[str, Any] | None = None  # a JSON Schema; compiled (and refused if it cannot be) per request
    strict: bool | None = None


class Tool(BaseModel):
    type: Literal["function"]
    function: Function


class NamedFunction(BaseModel):
    name: str = Field(min_length=1, max_length=64)


class NamedTool(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    name: str = Field("response", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = Field(None, max_length=NAME * 64)
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError('type "json_schema" needs json_schema: {"name": ..., "schema": {...}}')
        return self


class StreamOptions(BaseModel):
    include_usage: bool = False


class Generation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=NAME)
    max_tokens: int | None = Field(None, gt=0, le=2**31 - 1)
    temperature: float = Field(1.0, ge=0, le=2, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED[0], le=SEED[1])
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, max_length=NAME)
    metadata: dict[str, str] | None = None  # routers can match on it
    n: Literal[1] = 1

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s or len(s) > NAME for s in stops):
            raise ValueError(f"stop takes up to 4 non-empty strings of at most {NAME} characters")
        return stops

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, metadata: dict[str, str] | None) -> dict[str, str] | None:
        if metadata and (len(metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in metadata.items())):
            raise ValueError("metadata takes up to 16 pairs, keys up to 64 and values up to 512 characters")
        return metadata

    def characters(self) -> int:
        """Characters of the prompt text, for the cheap check before tokenizing."""
        raise NotImplementedError


class ChatRequest(Generation):
    messages: list[Message] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(None, gt=0, le=2**31 - 1)
    logprobs: Literal[False] | None = None
    response_format: ResponseFormat | None = None
    tools: Annotated[list[Tool], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    parallel_tool_calls: bool = True

    @model_validator(mode="after")
    def _tools_consistent(self) -> ChatRequest:
        names = [t.function.name for t in self.tools or []]
        if len(set(names)) < len(names):
            raise ValueError("tools: a function name is declared twice")
        if isinstance(self.tool_choice, NamedTool) and self.tool_choice.function.name not in names:
            raise ValueError(f"tool_choice names {self.tool_choice.function.name!r}, which is not in tools ({', '.join(names) or 'none given'})")
        if self.tool_choice == "required" and not names:
            raise ValueError('tool_choice "required" needs tools')
        open_calls: set[str] = set()
        for i, message in enumerate(self.messages):
            if message.role == "tool":
                if message.tool_call_id not in open_calls:
                    raise ValueError(f"messages[{i}].tool_call_id {message.tool_call_id!r} answers no tool call made in an earlier assistant message")
                open_calls.discard(message.tool_call_id)
            else:
                open_calls = {c.id for c in message.tool_calls or []} if message.role == "assistant" else set()
        return self

    def characters(self) -> int:
        return sum(len(m.text()) + sum(len(c.function.arguments) for c in m.tool_calls or []) for m in self.messages)

    def functions(self) -> list[dict]:
        """The declared functions as OpenAI writes them ({"type": "function", "function": {...}})."""
        return [t.model_dump(exclude_none=True) for t in self.tools or []]

    def calls_tools(self) -> bool:
        """Whether the answer may be tool calls (tools given and tool_choice is not "none")."""
        return bool(self.tools) and self.tool_choice != "none"

    def token_limit(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default


class CompletionRequest(Generation):
    prompt: str | list[str]
    logprobs: None = None
    echo: Literal[False] = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str:
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise ValueError("send one prompt per request (a list of exactly one string)")
            prompt = prompt[0]
        if not prompt.strip():
            raise ValueError("prompt is empty")
        return prompt

    def characters(self) -> int:
        return len(self.prompt)

    def token_limit(self, default: int) -> int:
        return self.max_tokens or default


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: a judgement of one response, by its request id (the `id` of the completion)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"] | None = None
    score: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    corrected: str | None = Field(None, min_length=1, max_length=100_000)  # the answer the model should have given
    comment: str | None = Field(None, max_length=10_000)

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackRequest:
        if self.rating is None and self.score is None and self.corrected is None and not self.comment:
            raise ValueError("give at least one of rating (up/down), score (0..1), corrected or comment")
        return self
