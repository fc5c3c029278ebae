"""Data stage, rule harmful_content: flagged rows rejected with file, line, message and why; kept and counted
with `data.safety: warn`; what is and is not screened."""

import json
from pathlib import Path

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.config import DataConfig, SafetyConfig, TaskConfig
from tuneloop.data.prepare import prepare

TASK = TaskConfig(system_prompt="Triage the ticket. Never write 'damn idiot' or any insult.")
ANSWER = '{"category": "billing"}'


def chat(user: str, answer: str = ANSWER) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(tmp_path: Path, rows: list, safety) -> tuple[dict, list[dict], int]:
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = prepare([source], tmp_path / "out", DataConfig(val_ratio=0, test_ratio=0, safety=safety), TASK)
    kept = len(lines(tmp_path / "out" / "train.jsonl"))
    return report, lines(tmp_path / "out" / "rejected.jsonl"), kept


ROWS = [*ticket_rows(3), chat("Where is my refund, you useless fucking idiots?"), *ticket_rows(2, seed=1),
        chat("Please update my address.", "Go kill yourself."), chat("My parcel arrived crushed.")]


def test_harmful_input_and_answer_rows_are_rejected_with_line_message_and_reason(tmp_path):
    report, rejected, kept = run(tmp_path, ROWS, "reject")
    assert [(r["line"], r["rule"], r["field"]) for r in rejected] == [
        (4, "harmful_content", "messages[1].content"),  # the task's system prompt is messages[0], and not screened
        (7, "harmful_content", "messages[2].content")]
    assert rejected[0]["reason"].startswith("the user message messages[1].content: classifier score ")
    assert rejected[1]["reason"] == "the assistant message messages[2].content: blocklist term 'kill yourself'"
    assert rejected[1]["row"]["messages"][2]["content"] == "Go kill yourself."
    assert kept == 6 and report["rows_in"] == 8 and report["rejected_by_rule"]["harmful_content"] == 2
    found = report["harmful_content"]
    assert (found["flagged"], found["rejected"], found["kept"]) == (2, 2, 0)
    assert found["by_detector"] == {"classifier": 1, "blocklist": 1}
    assert "Harmful content (2 rows flagged, rejected" in (tmp_path / "out" / "report.html").read_text()


def test_warn_keeps_flagged_rows_and_counts_them(tmp_path):
    report, rejected, kept = run(tmp_path, ROWS, "warn")
    assert not rejected and kept == 8
    found = report["harmful_content"]
    assert (found["mode"], found["flagged"], found["rejected"], found["kept"]) == ("warn", 2, 0, 2)
    assert [e["where"].rsplit(":", 1)[1] for e in found["kept_examples"]] == ["4", "7"]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["harmful_content"] == found
    assert "in.jsonl:7" in (tmp_path / "out" / "report.html").read_text()


def test_off_screens_nothing_and_lists_and_allow_terms_come_from_config(tmp_path):
    report, rejected, kept = run(tmp_path, ROWS, "off")
    assert not rejected and kept == 8 and "harmful_content" not in report
    safety = SafetyConfig(terms=["crushed"], allow=["kill yourself"])
    report, rejected, kept = run(tmp_path, ROWS, safety)
    assert [r["line"] for r in rejected] == [4, 8]


def test_a_preference_pairs_rejected_answer_is_not_screened_but_its_prompt_and_chosen_are(tmp_path):
    rows = [{"prompt": "my order is late", "chosen": '{"category": "shipping"}', "rejected": "shut up, moron"},
            {"prompt": "you stupid morons lost it", "chosen": '{"category": "shipping"}', "rejected": "x"},
            {"prompt": "refund?", "chosen": "no refund for idiots like you", "rejected": '{"category": "billing"}'}]
    report, rejected, kept = run(tmp_path, rows, "reject")
    assert kept == 1 and [(r["line"], r["field"]) for r in rejected] == [(2, "prompt[1].content"), (3, "chosen[0].content")]


def test_flags_cross_from_worker_processes_unchanged(tmp_path, monkeypatch):
    from tuneloop.data import rowwork

    monkeypatch.setattr(rowwork, "CHUNK", 3)  # flagged rows in different chunks and workers
    source = write_jsonl(tmp_path / "in.jsonl", ROWS)
    for mode in ("reject", "warn"):
        one = prepare([source], tmp_path / f"{mode}1", DataConfig(val_ratio=0, test_ratio=0, safety=mode, workers=1), TASK)
        two = prepare([source], tmp_path / f"{mode}2", DataConfig(val_ratio=0, test_ratio=0, safety=mode, workers=2), TASK)
        assert one["harmful_content"] == two["harmful_content"] and one["harmful_content"]["flagged"] == 2
        for name in ("train.jsonl", "rejected.jsonl"):
            assert (tmp_path / f"{mode}1" / name).read_bytes() == (tmp_path / f"{mode}2" / name).read_bytes()
