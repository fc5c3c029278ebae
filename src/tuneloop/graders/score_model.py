"""score_model: a judge model behind an OpenAI-compatible endpoint (`POST {base_url}/chat/completions`)
scores each answer. The messages are templates over the sample and its row; the first number of the
judge's reply, mapped from `range` to [0, 1] (and clipped there), is the score. An HTTP error, a
timeout, a reply that is not a chat completion, or one with no number costs that sample (0.0, counted).
Requests go out `max_concurrency` at a time.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import httpx

from tuneloop.errors import TuneloopError
from tuneloop.graders.grades import Grades, check_lengths, collect
from tuneloop.graders.specs import ScoreModelSpec
from tuneloop.graders.templates import render, scope

NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


class ScoreModel:
    def __init__(self, spec: ScoreModelSpec):
        self.spec, self.name = spec, spec.name
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.headers = {}
        if spec.api_key_env is not None:
            key = os.environ.get(spec.api_key_env)
            if not key:
                raise TuneloopError(f"score_model grader '{spec.name}': the environment variable {spec.api_key_env} "
                                    "(api_key_env) is not set")
            self.headers["Authorization"] = f"Bearer {key}"

    def grade(self, outputs: list[str], items: list[dict]) -> Grades:
        check_lengths(outputs, items)
        with httpx.Client(timeout=self.spec.timeout_s, headers=self.headers) as client, \
                ThreadPoolExecutor(max_workers=min(self.spec.max_concurrency, max(len(outputs), 1))) as pool:
            outcomes = list(pool.map(lambda pair: self._one(client, *pair), zip(outputs, items)))
        return collect("score_model", self.name, outcomes)

    def _one(self, client: httpx.Client, output: str, item: dict) -> float | str:
        names = scope(output, item)
        body = {"model": self.spec.model, "temperature": self.spec.temperature,
                "messages": [{"role": m.role, "content": render(m.content, names)} for m in self.spec.input]}
        try:
            response = client.post(self.url, json=body)
        except httpx.TimeoutException:
            return f"no reply from {self.url} within timeout_s={self.spec.timeout_s:g} s"
        except httpx.HTTPError as err:
            return f"{self.url}: {type(err).__name__}: {err}"
        if response.status_code != 200:
            return f"{self.url}: HTTP {response.status_code}: {response.text[:200]}"
        try:
            reply = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return f"{self.url}: the reply is not a chat completion: {response.text[:200]}"
        found = NUMBER.search(reply) if isinstance(reply, str) else None
        if found is None:
            return f"no number in the judge's reply {str(reply)[:200]!r}"
        low, high = self.spec.range
        return min(max((float(found[0]) - low) / (high - low), 0.0), 1.0)
