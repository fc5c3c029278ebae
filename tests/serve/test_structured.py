"""Structured outputs and tool calls against a real server (the tiny random model, so any valid output is the
grammar's doing, not the model's): response_format json_schema / json_object, the SDK's parse() with a
pydantic model, tools with tool_choice required / named / auto / none, a tool-call round trip streaming and
not, constraint inside a mixed continuous batch and with LoRA adapters, and 400s for bad schemas and tools."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import running
from tuneloop.registry.store import Registry
from tuneloop.server import ServeOptions, build_app
from tuneloop.serve.handler import Limits

TICKET = {"type": "object", "additionalProperties": False, "required": ["category", "priority", "urgent"],
          "properties": {"category": {"enum": ["billing", "shipping", "technical"]},
                         "priority": {"type": "integer", "minimum": 1, "maximum": 5}, "urgent": {"type": "boolean"}}}
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                          "properties": {"city": {"enum": ["Paris", "Oslo", "Lima"]}, "unit": {"enum": ["C", "F"]}}}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "additionalProperties": False, "required": ["zone"], "properties": {"zone": {"enum": ["UTC", "CET"]}}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
BASE = ""  # the base model's name on the server (its folder), set by the server fixture


class Ticket(BaseModel):
    category: Literal["billing", "shipping", "technical"]
    priority: int = Field(ge=1, le=5)
    urgent: bool


@pytest.fixture(scope="module")
def server(tiny_model_dir, adapters, tmp_path_factory):
    global BASE
    BASE, root = str(tiny_model_dir), tmp_path_factory.mktemp("structured")
    url = f"sqlite:///{root / 'registry.db'}"
    Registry(url).register("support", adapters["a"], str(tiny_model_dir), "lora")
    app, _ = build_app(ServeOptions(models=["support"], base=str(tiny_model_dir), registry=url, limits=Limits(max_tokens=96)))
    with running(app) as base_url:
        yield base_url


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="none", max_retries=0)


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema, "strict": True}}


def test_json_schema_answers_always_validate_even_from_a_random_model(client):
    prompts = [f"Ticket {i}: my parcel is late" for i in range(12)]

    def ask(prompt: str, temperature: float, constrained: bool):
        extra = {"response_format": schema_format(TICKET)} if constrained else {}
        return client.chat.completions.create(model=BASE, messages=[{"role": "user", "content": prompt}], max_tokens=96,
                                              temperature=temperature, seed=1, **extra)

    with ThreadPoolExecutor(8) as pool:  # constrained and free requests share the continuous batch
        answers = list(pool.map(lambda a: ask(*a), [(p, t, c) for p in prompts for t in (0, 1.0) for c in (True, False)]))
    constrained, free = answers[::2], answers[1::2]
    for answer in constrained:
        assert answer.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(answer.choices[0].message.content), TICKET)
    assert sum(_valid(a.choices[0].message.content) for a in free) < len(free)  # the model alone writes noise


def test_the_sdk_parse_helper_returns_a_pydantic_object(client):
    completion = client.chat.completions.parse(model="support", messages=ASK, response_format=Ticket, max_tokens=96)
    ticket = completion.choices[0].message.parsed  # through a LoRA adapter
    assert isinstance(ticket, Ticket) and completion.choices[0].finish_reason == "stop"


def test_json_object_mode_starts_an_object(client):
    answer = client.chat.completions.create(model=BASE, messages=ASK, response_format={"type": "json_object"}, max_tokens=40, temperature=0)
    text = answer.choices[0].message.content
    assert text.startswith("{")
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)


def test_streamed_structured_output_is_the_same_json(client):
    stream = client.chat.completions.create(model=BASE, messages=ASK, response_format=schema_format(TICKET), max_tokens=96,
                                            temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    whole = client.chat.completions.create(model=BASE, messages=ASK, response_format=schema_format(TICKET), max_tokens=96, temperature=0)
    assert text == whole.choices[0].message.content
    jsonschema.validate(json.loads(text), TICKET)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(client, stream):
    first = _chat(client, stream, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", parallel_tool_calls=False, temperature=0)
    assert first["finish_reason"] == "tool_calls" and len(first["tool_calls"]) == 1
    call = first["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"]["name"] in {"get_weather", "get_time"}
    tool = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, TIME)}[call["function"]["name"]]
    jsonschema.validate(json.loads(call["function"]["arguments"]), tool)

    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": first["tool_calls"]},
               {"role": "tool", "tool_call_id": call["id"], "content": '{"temperature": 18, "sky": "clear"}'}]
    final = _chat(client, stream, messages=history, tools=[WEATHER, TIME], tool_choice="none", max_tokens=12)
    assert final["tool_calls"] == [] and final["finish_reason"] in {"stop", "length"} and isinstance(final["content"], str)


def test_a_named_tool_choice_calls_that_tool(client):
    answer = client.chat.completions.create(model=BASE, messages=ASK, tools=[WEATHER, TIME], max_tokens=96,
                                            tool_choice={"type": "function", "function": {"name": "get_time"}})
    calls = answer.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_time"] and json.loads(calls[0].function.arguments)["zone"] in {"UTC", "CET"}


def test_parallel_calls_are_each_valid(client):
    answer = client.chat.completions.create(model="support", messages=ASK, tools=[WEATHER, TIME], tool_choice="required",
                                            max_tokens=96, temperature=1.0, seed=3)
    assert answer.choices[0].finish_reason in {"tool_calls", "length"}
    assert answer.choices[0].message.tool_calls  # complete calls parse even when max_tokens cuts the last one
    for call in answer.choices[0].message.tool_calls:
        assert call.function.name in {"get_weather", "get_time"}
        json.loads(call.function.arguments)


def test_auto_tool_choice_leaves_plain_text_alone(client):
    answer = client.chat.completions.create(model=BASE, messages=ASK, tools=[WEATHER], max_tokens=8, temperature=0)
    choice = answer.choices[0]
    assert choice.finish_reason in {"stop", "length"} and not choice.message.tool_calls and isinstance(choice.message.content, str)


@pytest.mark.parametrize("body, param, words", [
    ({"response_format": schema_format({"type": "objekt"})}, "response_format.json_schema.schema", "objekt"),
    ({"response_format": schema_format({"type": "string", "pattern": "(?<=a)b"})}, "response_format.json_schema.schema", "look-around"),
    ({"response_format": {"type": "json_schema"}}, "response_format", "json_schema"),
    ({"response_format": {"type": "yaml"}}, "response_format", "type"),
    ({"tools": [{"type": "retrieval"}]}, "tools", "function"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools", "name"),
    ({"tools": [WEATHER, WEATHER]}, None, "twice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, None, "nope"),
    ({"tool_choice": "required"}, None, "needs tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}], "tool_choice": "required"},
     "tools[0].function.parameters", "objekt"),
    ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "18C"}]}, None, "answers no tool call"),
    ({"messages": [*ASK, {"role": "tool", "content": "18C"}]}, None, "tool_call_id"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]},
     None, "not JSON"),
])
def test_bad_schemas_and_tools_are_400s_naming_the_field(server, body, param, words):
    request = {"model": BASE, "messages": ASK, "max_tokens": 4, **body}
    response = httpx.post(f"{server}/v1/chat/completions", json=request, timeout=60)
    assert response.status_code == 400, response.text
    problem = response.json()["error"]
    assert words in problem["message"]
    if param:
        assert problem["param"] is not None and problem["param"].startswith(param), problem


def _chat(client, stream: bool, **request) -> dict:
    """content, tool_calls (as dicts) and finish_reason, from one answer or a stream of deltas."""
    request = {"model": BASE, "max_tokens": 96, **request}
    if not stream:
        choice = client.chat.completions.create(**request).choices[0]
        calls = [c.model_dump(include={"id", "type", "function"}) for c in choice.message.tool_calls or []]
        return {"content": choice.message.content, "tool_calls": calls, "finish_reason": choice.finish_reason}
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(**request, stream=True):
        if not chunk.choices:
            continue
        delta, finish = chunk.choices[0].delta, chunk.choices[0].finish_reason or finish
        content += delta.content or ""
        for part in delta.tool_calls or []:
            call = calls.setdefault(part.index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
            call["id"] = part.id or call["id"]
            call["function"]["name"] += part.function.name or "" if part.function else ""
            call["function"]["arguments"] += part.function.arguments or "" if part.function else ""
    return {"content": content, "tool_calls": [calls[i] for i in sorted(calls)], "finish_reason": finish}


def _valid(text: str | None, schema: dict = TICKET) -> bool:
    try:
        jsonschema.validate(json.loads(text or ""), schema)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


ODD_SCHEMAS = [{}, {"type": 5}, {"$ref": "#"}, {"type": "object", "properties": {"a": {"$ref": "#"}}}, {"enum": []},
               {"type": "string", "pattern": "["}, {"type": "integer", "minimum": 5, "maximum": 1}, {"anyOf": []},
               {"type": "array", "items": {"type": "object"}, "minItems": 10**9}, {"not": {}}, {"type": ["null"]},
               {"type": "object", "properties": {f"k{i}": {"type": "string"} for i in range(300)}},
               _deep := {"type": "object", "properties": {"x": {"type": "object", "properties": {"y": {"type": "array", "items": {"type": "string"}}}}}}]


@pytest.mark.parametrize("schema", ODD_SCHEMAS)
@pytest.mark.parametrize("where", ["response_format", "tool parameters"])
def test_odd_schemas_never_get_a_5xx(server, schema, where):
    if where == "response_format":
        extra = {"response_format": schema_format(schema)}
    else:
        extra = {"tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}], "tool_choice": "required"}
    response = httpx.post(f"{server}/v1/chat/completions", json={"model": BASE, "messages": ASK, "max_tokens": 8, **extra}, timeout=120)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        problem = response.json()["error"]
        assert problem["param"] or problem["code"] == "context_length_exceeded", response.text
