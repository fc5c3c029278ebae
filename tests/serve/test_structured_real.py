"""The bar for structured outputs with the real embedded model (no fine-tuning), through the official SDK:
json_schema answers are 100% schema-valid on 50 varied prompts (the same requests without the constraint are
far fewer), `chat.completions.parse` with a pydantic model works, and a tool-call round trip (tools -> calls ->
tool message -> final answer) works streaming and not."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import running
from tests.serve.test_structured import _chat, _valid

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "city", "age"],
          "properties": {"name": {"type": "string", "maxLength": 40}, "city": {"type": "string", "maxLength": 40},
                         "age": {"type": "integer", "minimum": 0, "maximum": 120}}}
NAMES = "Maria Jonas Aiko Omar Lena Carlos Priya Tom Ines Yusuf".split()
CITIES = "Lisbon Berlin Osaka Cairo Oslo Lima Pune Leeds Porto Izmir".split()
FRAMES = ["Extract name, city and age as JSON: {n}, {a}, lives in {c}.",
          "{n} is {a} years old and moved to {c} last year. Give me the JSON record.",
          "Turn this into JSON with name, city, age: '{c} resident {n} (age {a})'",
          "Parse the profile -> JSON. Name: {n}; Home: {c}; Age: {a}",
          "Write a JSON object describing {n} from {c}, who is {a}."]
PROMPTS = [FRAMES[i % 5].format(n=NAMES[i % 10], c=CITIES[(i * 3) % 10], a=18 + (i * 7) % 60) for i in range(50)]
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "additionalProperties": False, "required": ["city"],
                          "properties": {"city": {"type": "string", "maxLength": 40}}}}}


class Person(BaseModel):
    name: str = Field(max_length=40)
    city: str = Field(max_length=40)
    age: int = Field(ge=0, le=120)


@pytest.fixture(scope="module")
def client():
    from tuneloop.server import ServeOptions, build_app

    app, _ = build_app(ServeOptions(base=MODEL, request_log="off", run_jobs=False))
    with running(app) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)


def test_json_schema_answers_are_all_valid_and_far_more_than_without(client):
    def ask(prompt: str, constrained: bool) -> str:
        extra = {"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}} if constrained else {}
        return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=80,
                                              temperature=0, **extra).choices[0].message.content

    with ThreadPoolExecutor(16) as pool:
        constrained = list(pool.map(lambda p: ask(p, True), PROMPTS))
        free = list(pool.map(lambda p: ask(p, False), PROMPTS))
    valid = [_valid(text, PERSON) for text in constrained]
    without = sum(_valid(text, PERSON) for text in free)
    print(f"schema-valid: {sum(valid)}/50 with response_format, {without}/50 without")
    assert all(valid), [t for t, ok in zip(constrained, valid) if not ok]
    assert without <= 40


def test_parse_with_a_pydantic_model(client):
    completion = client.chat.completions.parse(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}],
                                               response_format=Person, max_tokens=80, temperature=0)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and person.name


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(client, stream):
    ask = [{"role": "user", "content": "What's the weather like in Oslo right now?"}]
    first = _chat(client, stream, model=MODEL, messages=ask, tools=[WEATHER], tool_choice="required", temperature=0)
    assert first["finish_reason"] == "tool_calls" and first["tool_calls"][0]["function"]["name"] == "get_weather"
    arguments = json.loads(first["tool_calls"][0]["function"]["arguments"])
    jsonschema.validate(arguments, WEATHER["function"]["parameters"])
    history = [*ask, {"role": "assistant", "content": None, "tool_calls": first["tool_calls"]},
               {"role": "tool", "tool_call_id": first["tool_calls"][0]["id"], "content": '{"temperature_c": 4, "sky": "snow"}'}]
    final = _chat(client, stream, model=MODEL, messages=history, tools=[WEATHER], max_tokens=48, temperature=0)
    print(f"call {arguments} -> answer {final['content']!r}")
    assert final["finish_reason"] in {"stop", "length"} and final["content"]

