"""The teacher: an OpenAI-compatible chat endpoint asked for synthetic rows, with retries and a budget.

A request is retried on a timeout, a refused connection, HTTP 429 and 5xx, with exponential back-off and
jitter (a server's Retry-After is honoured, up to 60 s); any other HTTP error fails at once, saying what
the endpoint answered. The budget (requests and tokens, earlier runs of a resumed file included) is taken
before a request is sent, so concurrent requests never overshoot it by more than their own tokens.
"""

from __future__ import annotations

import os
import random
import threading
import time
from dataclasses import dataclass

import httpx

from tuneloop.config import TeacherConfig
from tuneloop.errors import TuneloopError

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


@dataclass
class Reply:
    content: str | None = None  # the assistant's message, None when the request failed
    tokens: int = 0  # prompt + completion tokens, as the endpoint reports them (estimated when it does not)
    attempts: int = 0
    error: str | None = None


class Budget:
    """Requests and tokens left; thread-safe."""

    def __init__(self, max_requests: int | None, max_tokens: int | None, used_requests: int = 0, used_tokens: int = 0):
        self.max_requests, self.max_tokens = max_requests, max_tokens
        self.requests, self.tokens = used_requests, used_tokens
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Claim one request; False when the budget is spent."""
        with self._lock:
            if self.exhausted():
                return False
            self.requests += 1
            return True

    def spend(self, tokens: int) -> None:
        with self._lock:
            self.tokens += tokens

    def exhausted(self) -> bool:
        return (self.max_requests is not None and self.requests >= self.max_requests) or \
               (self.max_tokens is not None and self.tokens >= self.max_tokens)


class Teacher:
    def __init__(self, cfg: TeacherConfig, budget: Budget, seed: int = 0):
        self.cfg, self.budget = cfg, budget
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"
        headers = {}
        if cfg.api_key_env is not None:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise TuneloopError(f"data.synth.teacher.api_key_env: the environment variable {cfg.api_key_env} is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.Client(timeout=cfg.timeout_s, headers=headers)
        self._jitter = random.Random(seed)

    def close(self) -> None:
        self.client.close()

    def ask(self, messages: list[dict], schema: dict | None, temperature: float | None = None, seed: int | None = None) -> Reply | None:
        """The teacher's reply; None when the budget is spent (nothing was sent)."""
        if not self.budget.take():
            return None
        body = {"model": self.cfg.model, "messages": messages, "max_tokens": self.cfg.max_tokens,
                "temperature": self.cfg.temperature if temperature is None else temperature}
        if seed is not None:
            body["seed"] = seed
        if schema is not None and self.cfg.structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "rows", "schema": schema, "strict": True}}
        reply = Reply()
        for attempt in range(self.cfg.retries + 1):
            reply.attempts = attempt + 1
            wait, reply.error = self._once(body, reply)
            if wait is None:
                break
            if attempt < self.cfg.retries:
                time.sleep(wait)
        self.budget.spend(reply.tokens)
        return reply

    def _once(self, body: dict, reply: Reply) -> tuple[float | None, str | None]:
        """(seconds to wait before retrying or None when done, error or None)."""
        backoff = min(0.5 * 2 ** (reply.attempts - 1), 30.0) * self._jitter.uniform(0.5, 1.5)
        try:
            response = self.client.post(self.url, json=body)
        except httpx.TimeoutException:
            return backoff, f"no reply from {self.url} within timeout_s={self.cfg.timeout_s:g} s"
        except httpx.TransportError as err:
            return backoff, f"{self.url}: {type(err).__name__}: {err}"
        if response.status_code in RETRY_STATUS:
            after = response.headers.get("retry-after", "")
            wait = min(float(after), 60.0) if after.replace(".", "", 1).isdigit() else backoff
            return wait, f"{self.url}: HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code != 200:
            return None, f"{self.url}: HTTP {response.status_code}: {response.text[:300]}"
        try:
            data = response.json()
            reply.content = data["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return None, f"{self.url}: the reply is not a chat completion: {response.text[:200]}"
        usage = data.get("usage") or {}
        total = usage.get("total_tokens")
        reply.tokens += int(total) if isinstance(total, int) else (len(str(body["messages"])) + len(reply.content or "")) // 4
        return None, None if isinstance(reply.content, str) else "the reply has no text content"
