"""One HTTP client for an OpenAI-compatible API: bearer key from an environment variable, bounded timeouts,
and retries with exponential back-off and jitter where a retry is safe.

A request that may be repeated (reads, and chat completions, which change nothing) is retried on a timeout,
a refused or dropped connection, HTTP 408/409/425/429 and 5xx. One that creates something (an upload, a
fine-tuning job) is retried only when the provider cannot have acted on it: the connection was never made,
or it answered 429 / 503. A server's Retry-After is honoured, up to 60 s. Whatever is left after the last
attempt is a ProviderError that names the URL, what it answered and how many attempts were made.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import httpx

from tuneloop.errors import TuneloopError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
UNSENT_STATUS = frozenset({429, 503})  # the provider refused before acting: safe even for a create
MAX_WAIT_S = 60.0


class ProviderError(TuneloopError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def api_key(env: str | None, where: str) -> str | None:
    """The key held by the environment variable `env` (None: no key is sent)."""
    if env is None:
        return None
    key = os.environ.get(env)
    if not key:
        raise TuneloopError(f"{where}: the environment variable {env} (api_key_env) is not set; export the provider's API key in it")
    return key


class Client:
    def __init__(self, base_url: str, *, key: str | None = None, timeout_s: float = 60.0, retries: int = 4,
                 backoff_s: float = 0.5, seed: int = 0):
        self.base_url = base_url.rstrip("/")
        self.retries, self.backoff_s = retries, backoff_s
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s, headers=headers)
        self._jitter = random.Random(seed)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def json(self, method: str, path: str, *, safe: bool = True, **kwargs: Any) -> dict:
        """The decoded JSON object of a successful request."""
        response = self.send(method, path, safe=safe, **kwargs)
        try:
            data = response.json()
        except ValueError:
            raise ProviderError(f"{self.base_url}{path}: the answer is not JSON: {response.text[:200]!r}") from None
        if not isinstance(data, dict):
            raise ProviderError(f"{self.base_url}{path}: expected a JSON object, got {type(data).__name__}")
        return data

    def send(self, method: str, path: str, *, safe: bool = True, **kwargs: Any) -> httpx.Response:
        """The response (2xx) to `method path`, retried as the module docstring says."""
        url, last = f"{self.base_url}{path}", ""
        for attempt in range(1, self.retries + 2):
            wait = min(self.backoff_s * 2 ** (attempt - 1), 30.0) * self._jitter.uniform(0.5, 1.5)
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.ConnectError as err:  # never reached the provider: always safe to repeat
                last = f"could not connect ({err})"
            except httpx.TimeoutException:
                last = f"no answer within {self.http.timeout.read or 0:g} s"
                if not safe:
                    break
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
                if not safe:
                    break
            else:
                if response.is_success:
                    return response
                last = f"HTTP {response.status_code}: {_message(response)}"
                if response.status_code not in (RETRY_STATUS if safe else UNSENT_STATUS):
                    raise ProviderError(f"{method} {url}: {last}", response.status_code)
                after = response.headers.get("retry-after", "")
                if after.replace(".", "", 1).isdigit():
                    wait = min(float(after), MAX_WAIT_S)
            if attempt <= self.retries:
                time.sleep(wait)
        raise ProviderError(f"{method} {url}: {last} (after {attempt} attempt{'s' * (attempt > 1)}); check that the provider "
                            "is up and the base_url is right, then rerun: what was done so far is kept")


def _message(response: httpx.Response) -> str:
    """The provider's error message (OpenAI's envelope), else the start of the body."""
    try:
        body = response.json()
        return str(body["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return response.text[:300]
