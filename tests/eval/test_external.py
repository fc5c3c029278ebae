"""External systems in an evaluation: a model behind an OpenAI-compatible endpoint (a real `tuneloop serve` on
127.0.0.1 standing in for a hosted provider, behind a proxy that injects failures), recorded answers, costs,
gates across a hyphenated system name, and resuming after the provider went down."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.config import EvalConfig, ModelConfig, ObjectiveConfig, TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.eval.evaluate import evaluate
from tuneloop.eval.external import conversation_key
from tuneloop.layout import EvalDir

TASK = TaskConfig(output_schema={"type": "object", "required": ["category"]}, label_fields=["category"])


@pytest.fixture
def data(tmp_path):
    rows = ticket_rows(10)
    write_jsonl(tmp_path / "train.jsonl", rows[:6])
    write_jsonl(tmp_path / "test.jsonl", rows[6:])
    return tmp_path


def config(provider, tiny_model_dir, **extra) -> EvalConfig:
    external = {"name": "gpt-4o", "base_url": f"{provider.url}/v1", "model": str(tiny_model_dir), "retries": 3, **extra}
    return EvalConfig.model_validate({"systems": ["base", external], "max_new_tokens": 4, "few_shot": 1, "bootstrap": 100,
                                      "regression": False, "prices": {"gpt-4o": {"input": 2.5, "output": 10.0}}})


def test_an_external_endpoint_is_answered_scored_priced_and_gated(provider, data, tiny_model_dir):
    provider.fail(3)  # three 429s first: retried with back-off, answered in the end
    gates = ObjectiveConfig.model_validate({"gates": {"length_chars: base - gpt-4o": ">= -1000", "json_valid@gpt-4o": ">= 0"}})
    results = evaluate(config(provider, tiny_model_dir), ModelConfig(name=str(tiny_model_dir)), TASK, gates, data, None, data / "eval")
    assert set(results["systems"]) == {"base", "gpt-4o"} and results["objective_passed"]
    assert results["gates"][0]["value"] == pytest.approx(results["systems"]["base"]["length_chars"] - results["systems"]["gpt-4o"]["length_chars"])
    cost = results["costs"]["gpt-4o"]
    assert cost["requests"] == 4 and cost["prompt_tokens"] > 50 and cost["completion_tokens"] > 0
    assert cost["usd"] == pytest.approx((cost["prompt_tokens"] * 2.5 + cost["completion_tokens"] * 10) / 1e6)
    assert cost["usd_per_1k_requests"] == pytest.approx(cost["usd"] * 250)
    assert provider.seen["POST /v1/chat/completions"] == 4 + 3
    # The prompted framing: the schema instructions and a solved example were sent.
    samples = [json.loads(line) for line in (data / "eval" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(set(s["outputs"]) == {"base", "gpt-4o"} for s in samples)
    assert "External systems: tokens and cost" in (data / "eval" / "report.html").read_text()


def test_a_provider_that_goes_down_fails_clearly_and_the_rerun_sends_only_what_is_missing(provider, data, tiny_model_dir):
    cfg = config(provider, tiny_model_dir, concurrency=1, retries=1)
    cache = EvalDir(data / "eval").answers_cache("gpt-4o", "eval")
    provider.down()
    with pytest.raises(TuneloopError, match=r"4 of 4 requests to model .* failed.*HTTP 429: injected failure \(after 2 attempts\)"):
        evaluate(cfg, ModelConfig(name=str(tiny_model_dir)), TASK, ObjectiveConfig(), data, None, data / "eval")
    provider.fail(2)  # the first request fails both its attempts; the other three are answered and kept
    with pytest.raises(TuneloopError, match="1 of 4 requests"):
        evaluate(cfg, ModelConfig(name=str(tiny_model_dir)), TASK, ObjectiveConfig(), data, None, data / "eval")
    assert len(cache.read_text().splitlines()) == 3
    sent = provider.seen["POST /v1/chat/completions"]
    first = evaluate(cfg, ModelConfig(name=str(tiny_model_dir)), TASK, ObjectiveConfig(), data, None, data / "eval")
    assert provider.seen["POST /v1/chat/completions"] == sent + 1 and first["costs"]["gpt-4o"]["cached"] == 3
    sent += 1
    again = evaluate(cfg, ModelConfig(name=str(tiny_model_dir)), TASK, ObjectiveConfig(), data, None, data / "eval")
    assert provider.seen["POST /v1/chat/completions"] == sent and again["costs"]["gpt-4o"]["cached"] == 4
    assert again["systems"]["gpt-4o"] == first["systems"]["gpt-4o"]


def test_recorded_answers_stand_in_for_a_model_and_must_cover_the_test_split(data, tiny_model_dir):
    tests = [json.loads(line) for line in (data / "test.jsonl").read_text().splitlines()]
    golden = [{"messages": row["messages"][:-1], "answer": row["messages"][-1]["content"]} for row in tests]
    write_jsonl(data / "golden.jsonl", golden)
    cfg = EvalConfig.model_validate({"systems": ["base", {"name": "hosted", "answers": str(data / "golden.jsonl")}],
                                     "max_new_tokens": 4, "bootstrap": 100, "regression": False})
    results = evaluate(cfg, ModelConfig(name=str(tiny_model_dir)), TASK, ObjectiveConfig(), data, None, data / "eval")
    assert results["systems"]["hosted"]["json_valid"] == 1.0 and results["costs"]["hosted"]["recorded"]
    assert conversation_key(golden[0]["messages"]) != conversation_key(golden[1]["messages"])
    write_jsonl(data / "golden.jsonl", golden[:2])
    with pytest.raises(TuneloopError, match="no recorded answer for 2 of 4 eval inputs"):
        evaluate(cfg, ModelConfig(name=str(tiny_model_dir)), TASK, ObjectiveConfig(), data, None, data / "eval")


@pytest.mark.parametrize("entry, message", [
    ({"name": "base", "base_url": "http://x/v1", "model": "m"}, "built-in system"),
    ({"name": "x", "base_url": "http://x/v1"}, "base_url needs model"),
    ({"name": "x", "base_url": "http://x/v1", "model": "m", "answers": "a.jsonl"}, "exactly one of"),
    ({"name": "x", "base_url": "ftp://x", "model": "m"}, "base_url"),
])
def test_external_system_config_errors(entry, message):
    with pytest.raises(ValueError, match=message):
        EvalConfig.model_validate({"systems": ["base", entry]})
