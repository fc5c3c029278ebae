"""OpenAI request bodies for /v1/chat/completions and /v1/completions, validated with pydantic.

Fields OpenAI clients send that we do not use (frequency_penalty, logit_bias, ...) are accepted and
ignored; fields we cannot honour in a way the client would notice (n > 1, logprobs) are refused.

Every value has an explicit bound, so nothing a client sends reaches the tokenizer, the sampler or the
database unchecked: finite numbers only, lengths and counts capped (OpenAI's own limits where it has
them: 4 stop strings, 16 metadata pairs of 64/512 characters), a seed within torch's 64-bit range.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


NAME = 256  # characters in a model name, a user id, a stop string
MAX_MESSAGES = 2048
MAX_PARTS = 64
SEED = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed accepts


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_PARTS)]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


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

    def characters(self) -> int:
        return sum(len(m.text()) for m in self.messages)

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
