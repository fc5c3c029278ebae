"""A real uvicorn server on 127.0.0.1 with the tiny model, driven by the official openai client."""

import socket
import threading
import time

import httpx
import openai
import pytest
import uvicorn

from tuneloop.serve.app import create_app
from tuneloop.serve.engine import Engine

KEY = "test-key"


@pytest.fixture(scope="module")
def server(tiny_model_dir):
    engine = Engine(str(tiny_model_dir), adapter=None, system_prompt="Reply with JSON.")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(engine, "triage:1", api_keys=[KEY], max_tokens_limit=64), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def test_chat_completion_with_the_openai_client(client):
    response = client.chat.completions.create(
        model="triage:1", messages=[{"role": "user", "content": "My parcel is late"}], max_tokens=5, temperature=0,
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    assert response.usage.completion_tokens <= 5 and response.usage.prompt_tokens > 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_greedy_is_deterministic_and_seeded_sampling_repeats(client):
    ask = dict(model="triage:1", messages=[{"role": "user", "content": "hello"}], max_tokens=6)
    greedy = [client.chat.completions.create(**ask, temperature=0).choices[0].message.content for _ in range(2)]
    sampled = [client.chat.completions.create(**ask, temperature=1.0, seed=7).choices[0].message.content for _ in range(2)]
    assert greedy[0] == greedy[1] and sampled[0] == sampled[1]


def test_models_lists_the_served_names(client, tiny_model_dir):
    assert {m.id for m in client.models.list().data} == {"triage:1", str(tiny_model_dir)}


def test_wrong_key_is_rejected(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_unknown_model_and_limits_are_clear_errors(client):
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError, match="exceeds this server's limit"):
        client.chat.completions.create(model="triage:1", messages=[{"role": "user", "content": "x"}], max_tokens=1000)


def test_health_needs_no_key(server):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
