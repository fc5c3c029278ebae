"""Tool-call rows (OpenAI's fine-tuning format) in the data stage: read, validated with the field named,
rendered with the chat template and trained on (the calls are targets), shown in the report."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import ROOT
from tuneloop.config import FieldNames
from tuneloop.data.forms.messages import Messages
from tuneloop.models import encode_chat

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ROW = {"tools": TOOLS, "messages": [
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "18C, sunny"},
    {"role": "assistant", "content": "It is 18C and sunny in Paris."}]}


def convert(row):
    return Messages().convert(row, FieldNames())


def broken(path: str, value):
    row = copy.deepcopy(ROW)
    *parents, last = path
    target = row
    for key in parents:
        target = target[key]
    if value is None:
        del target[last]
    else:
        target[last] = value
    return row


def test_a_tool_call_row_is_kept_whole():
    row, problem = convert(ROW)
    assert problem is None and row["tools"] == TOOLS and row["messages"][1]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_a_row_may_end_on_the_call():
    row, problem = convert({"tools": TOOLS, "messages": ROW["messages"][:2]})
    assert problem is None and row["messages"][-1]["tool_calls"]


@pytest.mark.parametrize("path, value, rule, field", [
    (("messages", 1, "tool_calls", 0, "function", "arguments"), "{city: Paris", "bad_arguments", "messages[1].tool_calls[0].function.arguments"),
    (("messages", 1, "tool_calls", 0, "function", "arguments"), "[1]", "bad_arguments", "messages[1].tool_calls[0].function.arguments"),
    (("messages", 1, "tool_calls", 0, "function", "name"), "get_time", "undeclared_tool", "messages[1].tool_calls[0].function.name"),
    (("messages", 2, "tool_call_id"), "c9", "unmatched_tool_message", "messages[2].tool_call_id"),
    (("messages", 2, "tool_call_id"), None, "message_missing_key", "messages[2].tool_call_id"),
    (("messages", 1, "tool_calls"), [], "bad_tool_calls", "messages[1].tool_calls"),
    (("tools",), [{"type": "retrieval"}], "bad_tools", "tools[0]"),
    (("tools",), None, "undeclared_tool", "messages[1].tool_calls[0].function.name"),
])
def test_bad_tool_rows_are_rejected_with_the_field(path, value, rule, field):
    row, problem = convert(broken(path, value))
    assert row is None and problem.rule == rule and problem.field == field, problem


def test_a_call_not_answered_before_the_conversation_goes_on_is_rejected():
    row = copy.deepcopy(ROW)
    del row["messages"][2]
    _, problem = convert(row)
    assert problem.rule == "unanswered_tool_call" and "c1" in problem.reason


def test_the_calls_are_rendered_and_trained(tokenizer):
    row, _ = convert(ROW)
    encoded = encode_chat(tokenizer, row["messages"], 4096, row["tools"])
    text = tokenizer.decode(encoded.input_ids)
    trained = tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != -100])
    assert '"name": "get_weather"' in text.split("<|im_start|>user")[0]  # the tools are declared up front
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in trained
    assert "<tool_response>\n18C, sunny\n</tool_response>" in text and "18C, sunny" not in trained
    assert trained.endswith("It is 18C and sunny in Paris.<|im_end|>")


def test_the_example_prepares_with_its_broken_rows_rejected_and_a_rendered_call_in_the_report(tmp_path, tokenizer):
    from tuneloop.config import load_config
    from tuneloop.data.prepare import prepare

    cfg = load_config(ROOT / "examples" / "tool_calls" / "pipeline.yaml")
    report = prepare(cfg.data.inputs, tmp_path, cfg.data, cfg.task, cfg.model)
    assert {"bad_arguments", "undeclared_tool", "unanswered_tool_call"} <= set(report["rejected_by_rule"])
    assert report["kept"] > 200
    example = report["examples"]["train, a tool call"]
    assert "<tool_call>" in example["trained"] and "&lt;tool_call&gt;" in (tmp_path / "report.html").read_text()
    rejected = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert any(r["rule"] == "bad_arguments" and r["field"].endswith("arguments") for r in rejected)
