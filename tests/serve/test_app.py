"""A real uvicorn server on 127.0.0.1 with the tiny model and two registered adapters, driven by the
official openai client: chat and completions (plain and streaming), models, aliases and rollback,
auth, validation errors, metrics and the request log."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.conftest import running
from tuneloop.registry.store import Registry
from tuneloop.serve.handler import Limits
from tuneloop.server import ServeOptions, build_app

KEY = "test-key"
ASK = [{"role": "user", "content": "My parcel is late"}]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, adapters, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    url = f"sqlite:///{root / 'registry.db'}"
    registry = Registry(url)
    for key in ("a", "b"):
        registry.register("support", adapters[key], str(tiny_model_dir), "lora", task={"system_prompt": "Reply with JSON."})
    registry.set_alias("support", "production", 1)
    registry.set_alias("support", "challenger", 2)
    routes = root / "routes.yaml"
    routes.write_text("routes:\n  support-ab:\n    - {model: support@production, weight: 90}\n    - {model: support@challenger, weight: 10}\n")
    log = root / "requests.jsonl"
    app, catalog = build_app(ServeOptions(models=["support"], base=str(tiny_model_dir), registry=url, routes=routes,
                                          api_keys=[KEY], request_log=str(log), limits=Limits(max_tokens=64)))
    with running(app) as base_url:
        yield {"url": base_url, "registry": registry, "catalog": catalog, "log": log, "base": str(tiny_model_dir)}


@pytest.fixture
def client(setup):
    return openai.OpenAI(base_url=f"{setup['url']}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def http(setup):
    with httpx.Client(base_url=setup["url"], headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as http:
        yield http


def test_chat_completion_with_the_openai_client(client):
    response = client.chat.completions.create(model="support", messages=ASK, max_tokens=5, temperature=0)
    choice = response.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"} and response.model == "support"
    assert response.usage.completion_tokens <= 5 and response.usage.prompt_tokens > 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_gives_the_same_text_as_one_response(client):
    ask = dict(model="support", messages=ASK, max_tokens=12, temperature=0)
    whole = client.chat.completions.create(**ask).choices[0].message.content
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in {"stop", "length"}
    assert chunks[-1].usage.completion_tokens >= 1 and not chunks[-1].choices


def test_completions_plain_and_streaming(client, setup):
    ask = dict(model=setup["base"], prompt="The parcel", max_tokens=8, temperature=0)
    whole = client.completions.create(**ask)
    assert whole.object == "text_completion" and whole.usage.completion_tokens >= 1
    streamed = "".join(c.choices[0].text for c in client.completions.create(**ask, stream=True))
    assert streamed == whole.choices[0].text


def test_greedy_is_deterministic_and_seeded_sampling_repeats(client):
    ask = dict(model="support", messages=[{"role": "user", "content": "hello"}], max_tokens=6)
    greedy = {client.chat.completions.create(**ask, temperature=0).choices[0].message.content for _ in range(2)}
    sampled = {client.chat.completions.create(**ask, temperature=1.0, seed=7).choices[0].message.content for _ in range(2)}
    assert len(greedy) == 1 and len(sampled) == 1


def test_models_lists_base_names_aliases_and_routes(client, setup):
    ids = {m.id for m in client.models.list()}
    assert {setup["base"], "support", "support@production", "support@challenger", "support-ab"} <= ids


def test_adapters_change_the_answer_and_the_base_is_served_bare(client, setup):
    answers = {name: client.chat.completions.create(model=name, messages=ASK, max_tokens=8, temperature=0).choices[0].message.content
               for name in ("support:1", "support:2", setup["base"])}
    assert len(set(answers.values())) == 3


def test_alias_moves_and_rollback_take_effect_without_restart(client, setup):
    def served() -> str:
        raw = client.chat.completions.with_raw_response.create(model="support", messages=ASK, max_tokens=1, temperature=0)
        return raw.headers["x-tuneloop-model"]

    registry = setup["registry"]
    assert served() == "support:1"
    registry.set_alias("support", "production", 2, reason="promote")
    assert served() == "support:2"
    registry.rollback("support", "production", reason="bad answers")
    assert served() == "support:1"


def test_ab_split_by_weight_is_sticky_and_changes_at_run_time(http):
    def variant(user: str) -> str:
        response = http.post("/v1/chat/completions", json={"model": "support-ab", "messages": ASK, "max_tokens": 1, "user": user})
        assert response.status_code == 200, response.text
        return response.headers["x-tuneloop-variant"]

    users = [f"user-{i}" for i in range(300)]
    before = {u: variant(u) for u in users}
    share = sum(v == "support@challenger" for v in before.values()) / len(users)
    assert 0.05 <= share <= 0.15, share
    assert all(variant(u) == before[u] for u in users[:20]), "a user must keep their variant"

    rollout = {"variants": [{"model": "support@production", "weight": 50}, {"model": "support@challenger", "weight": 50}]}
    assert http.put("/admin/routes/support-ab", json=rollout).status_code == 200
    after = {u: variant(u) for u in users}
    assert 0.4 <= sum(v == "support@challenger" for v in after.values()) / len(users) <= 0.6
    assert all(after[u] == "support@challenger" for u in users if before[u] == "support@challenger")
    http.put("/admin/routes/support-ab", json={"variants": [{"model": "support@production", "weight": 90},
                                                            {"model": "support@challenger", "weight": 10}]})


def test_concurrent_requests_are_generated_together(setup):
    engine = setup["catalog"].engine_for(setup["base"])
    engine.peak_batch = 0
    client = openai.OpenAI(base_url=f"{setup['url']}/v1", api_key=KEY, max_retries=0)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.chat.completions.create(model="support", messages=[{"role": "user", "content": f"order {i}"}],
                                                               max_tokens=24, temperature=0), range(8)))
    assert engine.peak_batch >= 4


def test_admin_loads_and_unloads_adapters(http):
    assert http.post("/admin/models/unload", json={"model": "support:2"}).json() == {"model": "support:2", "done": True}
    assert "support:2" not in http.get("/admin/models").json()["engines"][0]["adapters"]
    assert http.post("/admin/models/load", json={"model": "support@challenger"}).json()["done"] is True
    assert "support:2" in http.get("/admin/models").json()["engines"][0]["adapters"]


def test_api_key_is_required_on_v1_but_not_health(setup):
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{setup['url']}/v1", api_key="wrong", max_retries=0).models.list()
    assert httpx.post(f"{setup['url']}/admin/models/load", json={"model": "support"}).status_code == 401
    assert httpx.get(f"{setup['url']}/health").json()["status"] == "ok"


CHAT = "/v1/chat/completions"


@pytest.mark.parametrize("path, body, status, says", [
    (CHAT, "[1, 2]", 400, "valid dictionary"),
    (CHAT, "{not json", 400, "JSON"),
    (CHAT, {"model": "support"}, 400, "messages: Field required"),
    (CHAT, {"model": "support", "messages": []}, 400, "messages: List should have at least 1 item"),
    (CHAT, {"model": "support", "messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
    (CHAT, {"model": "support", "messages": ASK, "temperature": "hot"}, 400, "temperature"),
    (CHAT, {"model": "support", "messages": ASK, "max_tokens": -1}, 400, "max_tokens"),
    (CHAT, {"model": "support", "messages": ASK, "n": 2}, 400, "n:"),
    (CHAT, {"model": "support", "messages": ASK, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    (CHAT, {"model": "nope", "messages": ASK}, 404, "no model 'nope'"),
    (CHAT, {"model": "support@nightly", "messages": ASK}, 404, "nightly"),
    (CHAT, {"model": "support", "messages": ASK, "max_tokens": 65}, 400, "limit of 64"),
    (CHAT, {"model": "support", "messages": [{"role": "user", "content": "word " * 1100}], "max_tokens": 10}, 400, "context of 1024"),
    ("/v1/completions", {"model": "support", "prompt": "  "}, 400, "prompt is empty"),
    ("/v1/completions", {"model": "support", "prompt": ["a", "b"]}, 400, "one prompt"),
    ("/v1/completions", {"model": "support"}, 400, "prompt: Field required"),
])
def test_bad_requests_get_a_clear_4xx(http, path, body, status, says):
    if isinstance(body, str):
        response = http.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]["message"]


def test_context_error_names_both_numbers(http):
    body = {"model": "support", "messages": [{"role": "user", "content": "word " * 1100}], "max_tokens": 10}
    message = http.post(CHAT, json=body).json()["error"]["message"]
    assert "max_tokens is 10" in message and "tokens" in message.split("max_tokens")[0]


def test_metrics_and_request_log_record_every_request(http, setup):
    http.post(CHAT, json={"model": "support-ab", "messages": ASK, "max_tokens": 2, "user": "metrics"})
    text = http.get("/metrics").text
    assert 'tuneloop_requests_total{endpoint="chat"' in text and "tuneloop_time_to_first_token_seconds_bucket" in text
    assert "tuneloop_request_errors_total" in text and "tuneloop_queue_depth" in text
    setup["catalog"]  # the log is flushed every 0.5 s
    import time

    time.sleep(1.2)
    records = [json.loads(line) for line in setup["log"].read_text().splitlines()]
    mine = [r for r in records if r["user"] == "metrics"]
    assert mine and mine[-1]["route"] == "support-ab" and mine[-1]["variant"] in {"support@production", "support@challenger"}
    assert mine[-1]["latency_ms"] > 0 and mine[-1]["completion_tokens"] >= 1 and mine[-1]["status"] == 200
    assert any(r["status"] == 404 for r in records)


def test_api_docs_render_offline_without_a_cdn(setup):
    page = httpx.get(f"{setup['url']}/docs")
    assert page.status_code == 200 and "/v1/chat/completions" in page.text and "/openapi.json" in page.text
    assert "<script" not in page.text and "cdn" not in page.text.lower()  # nothing to fetch from elsewhere
    assert "messages" in page.text  # the chat body's fields
    assert httpx.get(f"{setup['url']}/redoc", follow_redirects=True).url.path == "/docs"
    assert httpx.get(f"{setup['url']}/openapi.json").json()["info"]["title"] == "tuneloop"
