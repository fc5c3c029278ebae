"""OpenAI request bodies for /v1/chat/completions and /v1/completions, validated with pydantic.

Fields OpenAI clients send that we do not use (frequency_penalty, logit_bias, ...) are accepted and
ignored; fields we cannot honour in a way the client would notice (n > 1, logprobs) are refused.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class Generation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, gt=0)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None  # routers can match on it
    n: Literal[1] = 1

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> list[str]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops


class ChatRequest(Generation):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, gt=0)
    logprobs: Literal[False] | None = None

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

    def token_limit(self, default: int) -> int:
        return self.max_tokens or default


class FeedbackRequest(BaseModel):
    """POST /v1/feedback: a judgement of one response, by its request id (the `id` of the completion)."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=64)
    rating: Literal["up", "down"] | None = None
    score: float | None = Field(None, ge=0, le=1)
    corrected: str | None = Field(None, min_length=1)  # the answer the model should have given
    comment: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackRequest:
        if self.rating is None and self.score is None and self.corrected is None and not self.comment:
            raise ValueError("give at least one of rating (up/down), score (0..1), corrected or comment")
        return self
