"""Answers from a chat model behind an OpenAI-compatible endpoint: many conversations, `concurrency` at a
time, greedy (temperature 0), with the token counts the provider reports.

Every answer is appended to a cache file as it arrives (one JSON line: the request's hash, the answer, its
usage), and a request already in the cache is not sent again: a run stopped by a provider that went down
resumes where it stopped and pays for no answer twice.
"""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.providers.client import Client, ProviderError


@dataclass
class Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: int = 0  # answers read from the cache (not paid for again)
    failed: list[str] = field(default_factory=list)

    def add(self, usage: dict) -> None:
        self.requests += 1
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)


def request_key(model: str, messages: list[dict], max_tokens: int) -> str:
    text = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def answer_all(client: Client, model: str, conversations: list[list[dict]], *, max_tokens: int, concurrency: int,
               cache: Path | None = None, on_answer=None, usage: Usage | None = None) -> tuple[list[str], Usage]:
    """Greedy answers in input order, and what they cost (added to `usage` when given); raises ProviderError (after
    the cache has every answer that did arrive) when a request failed after its retries."""
    usage, lock = usage if usage is not None else Usage(), threading.Lock()
    failed_before = len(usage.failed)
    known = _read_cache(cache)
    keys = [request_key(model, c, max_tokens) for c in conversations]
    answers: list[str | None] = [known[k]["answer"] if k in known else None for k in keys]
    for k in keys:
        if k in known:
            usage.cached += 1
            usage.add(known[k].get("usage") or {})
    todo = [i for i, a in enumerate(answers) if a is None]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        body = {"model": model, "messages": conversations[i], "max_tokens": max_tokens, "temperature": 0}
        try:
            data = client.json("POST", "/chat/completions", json=body)
            text = data["choices"][0]["message"]["content"] or ""
        except ProviderError as err:
            with lock:
                usage.failed.append(str(err))
            return
        except (KeyError, IndexError, TypeError):
            with lock:
                usage.failed.append(f"{client.base_url}/chat/completions: the answer is not a chat completion: {str(data)[:200]}")
            return
        with lock:
            answers[i] = text.strip()
            usage.add(data.get("usage") or {})
            if cache is not None:
                with cache.open("a", encoding="utf-8") as out:
                    out.write(json.dumps({"key": keys[i], "answer": answers[i], "usage": data.get("usage") or {}}) + "\n")
        if on_answer is not None:
            on_answer()

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo) or 1))) as pool:
        list(pool.map(one, todo))
    failed = usage.failed[failed_before:]
    if failed:
        where = f"; the {len(todo) - len(failed)} answers that arrived are kept in {cache}" if cache else ""
        raise ProviderError(f"{len(failed)} of {len(todo)} requests to model '{model}' failed{where}: {failed[0]}")
    return [a or "" for a in answers], usage


def _read_cache(cache: Path | None) -> dict[str, dict]:
    if cache is None or not cache.is_file():
        return {}
    known = {}
    for line in cache.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            known[record["key"]] = record
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short when the process died: that answer is asked again
    return known
