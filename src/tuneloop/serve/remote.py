"""A request for a hosted fine-tune (a registry version of kind remote, or its train folder) answered by the
provider: the body goes on as it came (the model renamed to the provider's, the task's system prompt added as
for our own models), the answer comes back under the name the client asked for, streamed or whole, and the
request is logged and measured like any other. The provider's errors keep their status (429 with its
Retry-After, so clients back off); a provider that cannot be reached is a 502 that names it.
"""

from __future__ import annotations

import json
import os
import time
from typing import AsyncIterator

import httpx

from tuneloop.providers.remote import RemoteModel


class Unreachable(Exception):
    pass


def outgoing(body, endpoint: str, remote: RemoteModel, system_prompt: str | None) -> dict:
    payload = body.model_dump(exclude_none=True, by_alias=True) | {"model": remote.model}
    messages = payload.get("messages")
    if endpoint == "chat" and system_prompt and messages and messages[0].get("role") != "system":
        payload["messages"] = [{"role": "system", "content": system_prompt}, *messages]
    return payload


def headers_for(remote: RemoteModel) -> dict[str, str]:
    key = os.environ.get(remote.api_key_env) if remote.api_key_env else None
    if remote.api_key_env and not key:
        raise Unreachable(f"the hosted model's key is not set on this server: export {remote.api_key_env}")
    return {"Authorization": f"Bearer {key}"} if key else {}


async def forward(endpoint: str, payload: dict, remote: RemoteModel, timeout: float) -> tuple[int, dict, dict]:
    """(status, JSON body, headers worth passing on) of the provider's answer."""
    url = remote.base_url.rstrip("/") + ("/chat/completions" if endpoint == "chat" else "/completions")
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(url, json=payload, headers=headers_for(remote))
    except httpx.HTTPError as err:
        raise Unreachable(f"{url}: {type(err).__name__}: {err}") from None
    try:
        data = response.json()
    except ValueError:
        data = {"error": {"message": response.text[:500], "type": "server_error"}}
    passed = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return response.status_code, data if isinstance(data, dict) else {"error": {"message": str(data)[:500]}}, passed


async def stream(endpoint: str, payload: dict, remote: RemoteModel, timeout: float, model: str, record: dict,
                 started: float) -> AsyncIterator[str]:
    """The provider's server-sent events, each chunk renamed to `model`; `record` collects text, usage and timing."""
    url = remote.base_url.rstrip("/") + ("/chat/completions" if endpoint == "chat" else "/completions")
    text = []
    try:
        async with httpx.AsyncClient(timeout=timeout) as client, \
                client.stream("POST", url, json=payload, headers=headers_for(remote)) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")[:500]
                record.update(status=response.status_code, error=body)
                yield f"data: {json.dumps({'error': {'message': f'the provider answered HTTP {response.status_code}: {body}', 'type': 'server_error'}})}\n\n"
                yield "data: [DONE]\n\n"
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                try:
                    chunk = json.loads(line[6:])
                except ValueError:
                    continue
                chunk["model"] = model
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") if endpoint == "chat" else choice.get("text")
                    if piece:
                        record["ttft_ms"] = record["ttft_ms"] or (time.perf_counter() - started) * 1000
                        text.append(piece)
                if chunk.get("usage"):
                    record.update(prompt_tokens=chunk["usage"].get("prompt_tokens", 0),
                                  completion_tokens=chunk["usage"].get("completion_tokens", 0))
                yield f"data: {json.dumps(chunk)}\n\n"
    except (httpx.HTTPError, Unreachable) as err:
        record.update(status=502, error=f"{url}: {err}")
        yield f"data: {json.dumps({'error': {'message': f'{url}: {err}', 'type': 'server_error'}})}\n\n"
    else:
        record.setdefault("status", 200)
        record.update(response="".join(text))
    yield "data: [DONE]\n\n"
