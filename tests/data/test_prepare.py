"""Data stage: every rule with a tiny file, rows in = rows out, stratified seeded splits."""

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, ticket_rows, write_jsonl
from tuneloop.config import DataConfig, TaskConfig
from tuneloop.data.prepare import prepare
from tuneloop.errors import TuneloopError

TASK = TaskConfig(
    system_prompt="Reply with JSON.",
    output_schema={"type": "object", "required": ["category"], "properties": {"category": {"type": "string"}}},
    label_fields=["category"],
)
LABELS = {"category": ["billing", "shipping", "returns", "technical", "account"]}
GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": '{"category": "billing"}'}]}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def rows_out(out: Path) -> int:
    return sum(len(lines(out / f"{name}.jsonl")) for name in ("train", "val", "test", "rejected"))


@pytest.mark.parametrize("bad, rule, field", [
    ('{"messages": [', "unreadable", None),
    ("[1, 2]", "not_an_object", None),
    ({"text": "hi"}, "missing_messages", "messages"),
    ({"prompt": "a", "completion": '{"category": "billing"}', "extra": 1}, "unknown_keys", None),
    ({"messages": [{"role": "user", "content": "<b></b>"}, {"role": "assistant", "content": '{"category": "billing"}'}]}, "empty_after_cleaning", None),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": '{"category": "refunds"}'}]}, "label_not_allowed", "messages[2].content.category"),
    ({"prompt": "q", "chosen": "same", "rejected": "same"}, "identical_pair", "rejected"),
    ({"messages": [{"role": "user", "content": "hi", "weight": 0}, {"role": "assistant", "content": "x"}]}, "bad_weight", "messages[0].weight"),
    ({}, "missing_messages", "messages"),
    ({"messages": [{"role": "user"}]}, "message_missing_key", "messages[0].content"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "unknown_role", "messages[0].role"),
    ({"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x"}]}, "empty_content", "messages[0].content"),
    ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}, "wrong_type", "messages[0].content"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no_assistant", "messages"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "not json"}]}, "answer_not_json", "messages[2].content"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": '{"x": 1}'}]}, "answer_schema", "messages[2].content"),
    ({"prompt": "hi"}, "missing_field", "completion"),
    (GOOD, "duplicate", None),
])
def test_each_rule_rejects_with_file_line_and_reason(tmp_path, bad, rule, field):
    source = write_jsonl(tmp_path / "in.jsonl", [GOOD, bad if isinstance(bad, str) else json.dumps(bad)])
    report = prepare([source], tmp_path / "out", DataConfig(val_ratio=0, test_ratio=0, allowed_labels=LABELS), TASK)
    [rejected] = lines(tmp_path / "out" / "rejected.jsonl")
    assert (rejected["rule"], rejected["line"], rejected["source"]) == (rule, 2, str(source))
    assert rejected["reason"] and rejected.get("field") == field
    assert report["rows_in"] == 2 == rows_out(tmp_path / "out")
    if rule == "duplicate":
        assert rejected["reason"] == f"exact duplicate of {source}:1"


def test_invalid_utf8_is_rejected_not_fatal(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    prepare([source], tmp_path / "out", DataConfig(val_ratio=0, test_ratio=0), TASK)
    [rejected] = lines(tmp_path / "out" / "rejected.jsonl")
    assert rejected["rule"] == "unreadable" and "invalid UTF-8" in rejected["reason"]


def test_prompt_completion_rows_become_messages_with_the_system_prompt(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi", "completion": '{"category": "billing"}'}])
    prepare([source], tmp_path / "out", DataConfig(val_ratio=0, test_ratio=0), TASK)
    [row] = lines(tmp_path / "out" / "train.jsonl")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["metadata"] == {"source": str(source), "line": 1}


def test_shipped_example_keeps_every_row_accounted_for(tmp_path):
    source = ROOT / "examples" / "ticket_triage" / "tickets.jsonl"
    report = prepare([source], tmp_path / "out", DataConfig(), TASK)
    n_lines = sum(1 for line in source.read_text().splitlines() if line.strip())
    assert report["rows_in"] == n_lines == rows_out(tmp_path / "out")
    # The generator plants malformed rows and duplicates: the report must show them caught.
    dropped = report["rejected_by_rule"]
    assert dropped["duplicate"] + dropped["near_duplicate"] >= 28  # 15 exact + 15 near planted
    assert sum(n for rule, n in dropped.items() if "duplicate" not in rule) >= 8
    assert report["pii_redacted"]["email"] > 20 and report["pii_redacted"]["phone"] > 20
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert set(manifest["outputs"]) >= {"train.jsonl", "val.jsonl", "test.jsonl", "rejected.jsonl", "report.json"}


def test_split_is_stratified_seeded_and_disjoint(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", ticket_rows(100))
    task = TaskConfig(label_fields=["category"])
    prepare([source], tmp_path / "a", DataConfig(val_ratio=0.1, test_ratio=0.2, seed=1), task)
    prepare([source], tmp_path / "b", DataConfig(val_ratio=0.1, test_ratio=0.2, seed=1), task)
    splits = {name: lines(tmp_path / "a" / f"{name}.jsonl") for name in ("train", "val", "test")}
    assert {n: len(r) for n, r in splits.items()} == {"train": 70, "val": 10, "test": 20}
    test_labels = Counter(json.loads(r["messages"][-1]["content"])["category"] for r in splits["test"])
    assert set(test_labels.values()) == {4}  # 20 per category, 20% of each in test
    ids = {n: {r["metadata"]["line"] for r in rows} for n, rows in splits.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["val"]) and not (ids["val"] & ids["test"])
    assert (tmp_path / "a" / "test.jsonl").read_text() == (tmp_path / "b" / "test.jsonl").read_text()


def test_nothing_usable_is_one_clear_error(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", ["not json", "[]"])
    with pytest.raises(TuneloopError, match="no usable rows"):
        prepare([source], tmp_path / "out", DataConfig(), TASK)
    assert [r["rule"] for r in lines(tmp_path / "out" / "rejected.jsonl")] == ["unreadable", "not_an_object"]


def test_missing_input_file(tmp_path):
    with pytest.raises(TuneloopError, match="input file not found"):
        prepare([tmp_path / "nope.jsonl"], tmp_path / "out", DataConfig(), TASK)
