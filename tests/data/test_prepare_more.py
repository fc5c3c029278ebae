"""Data stage: readers, forms, cleaning, PII, near duplicates, lengths, frozen test, report and review."""

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.config import CleanConfig, DataConfig, FieldNames, ModelConfig, TaskConfig
from tuneloop.data.clean import Cleaner
from tuneloop.data.prepare import prepare
from tuneloop.errors import TuneloopError

ANSWER = '{"category": "billing"}'
FLAT = DataConfig(val_ratio=0, test_ratio=0)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def split_rows(out: Path) -> list[dict]:
    return [row for name in ("train", "val", "test") for row in lines(out / f"{name}.jsonl")]


def test_csv_json_array_and_parquet_inputs(tmp_path):
    with open(tmp_path / "a.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion"])
        writer.writerow(["Where is my order?\nIt is late.", "shipping"])  # a quoted multi-line cell
        writer.writerow(["", "empty prompt"])
    (tmp_path / "b.json").write_text(json.dumps([{"instruction": "Classify", "input": "refund please", "output": "billing"}, 7]))
    messages = json.dumps([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    pq.write_table(pa.table({"messages": [messages]}), tmp_path / "c.parquet")
    report = prepare([tmp_path / "a.csv", tmp_path / "b.json", tmp_path / "c.parquet"], tmp_path / "out", FLAT, TaskConfig())
    assert report["forms"] == {str(tmp_path / "a.csv"): {"prompt_completion": 1}, str(tmp_path / "b.json"): {"alpaca": 1},
                               str(tmp_path / "c.parquet"): {"messages": 1}}
    rejected = {(Path(r["source"]).name, r["line"], r["rule"]) for r in lines(tmp_path / "out" / "rejected.jsonl")}
    assert rejected == {("a.csv", 4, "empty_content"), ("b.json", 2, "not_an_object")}
    users = sorted(row["messages"][0]["content"] for row in split_rows(tmp_path / "out"))
    assert users == ["Classify\n\nrefund please", "Where is my order?\nIt is late.", "hi"]


def test_configurable_field_names(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"question": "2+2?", "answer": "4"}])
    cfg = DataConfig(val_ratio=0, test_ratio=0, fields=FieldNames(prompt="question", completion="answer"))
    prepare([source], tmp_path / "out", cfg, TaskConfig())
    assert split_rows(tmp_path / "out")[0]["messages"][-1] == {"role": "assistant", "content": "4"}


def test_preference_pairs_keep_prompt_chosen_rejected(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "Say hi", "chosen": "Hi!", "rejected": "No."}])
    report = prepare([source], tmp_path / "out", FLAT, TaskConfig(system_prompt="Be kind."))
    [row] = split_rows(tmp_path / "out")
    assert row["prompt"] == [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Say hi"}]
    assert row["chosen"] == [{"role": "assistant", "content": "Hi!"}] and row["rejected"][0]["content"] == "No."
    assert report["forms"][str(source)] == {"preference": 1}


def test_cleaning_rules():
    clean = Cleaner(CleanConfig())
    assert clean("Cafe\u0301  au\u200b lait <b>now</b>&amp; then\r\n\n\n\nbye  \n") == "Café au lait now& then\n\nbye"
    assert clean("if a < b and c > d") == "if a < b and c > d"  # not HTML: untouched
    assert Cleaner(CleanConfig(strip_html=False))("<b>x</b>") == "<b>x</b>"


def test_pii_is_redacted_in_outputs_and_counted_in_the_report(tmp_path):
    rows = [{"prompt": f"Mail me at jane{i}@example.com or call +1 415-555-01{i:02d}. Card 4111 1111 1111 1111.", "completion": f"ok {i}"} for i in range(3)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = prepare([source], tmp_path / "out", DataConfig(val_ratio=0, test_ratio=0, dedup={"near": False}), TaskConfig())
    assert report["pii_redacted"] == {"email": 3, "phone": 3, "credit_card": 3}
    written = (tmp_path / "out" / "train.jsonl").read_text() + (tmp_path / "out" / "report.json").read_text()
    assert "jane0@example.com" not in written and "4111" not in written and "[EMAIL]" in written


def test_near_duplicates_are_rejected_with_a_pointer(tmp_path):
    text = "My blender arrived with a cracked jar and the lid does not fit at all, so I would like a replacement sent out to me soon"
    rows = [{"prompt": text, "completion": "a"}, {"prompt": text.replace("soon", "quickly"), "completion": "a"},
            {"prompt": "Completely different question about my invoice total", "completion": "b"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = prepare([source], tmp_path / "out", FLAT, TaskConfig())
    [rejected] = lines(tmp_path / "out" / "rejected.jsonl")
    assert rejected["rule"] == "near_duplicate" and rejected["line"] == 2 and rejected["reason"].endswith(f"{source}:1")
    assert rejected["row"]["messages"][0]["content"].endswith("quickly")  # the dropped copy is kept for reading
    assert report["largest_duplicate_clusters"] == [{"kept": f"{source}:1", "dropped": [f"{source}:2"]}]


def test_frozen_test_split_is_reused_and_protected(tmp_path):
    first = write_jsonl(tmp_path / "round1.jsonl", ticket_rows(50))
    prepare([first], tmp_path / "r1", DataConfig(val_ratio=0.1, test_ratio=0.2), TaskConfig(label_fields=["category"]))
    frozen = lines(tmp_path / "r1" / "test.jsonl")
    # Round 2: new rows plus a copy of one frozen test row; the copy must not reach train.
    leaked = frozen[0]["messages"]
    second = write_jsonl(tmp_path / "round2.jsonl", [*ticket_rows(60, seed=1)[50:], {"messages": leaked}])
    cfg = DataConfig(val_ratio=0.1, frozen_test=tmp_path / "r1" / "test.jsonl")
    report = prepare([second], tmp_path / "r2", cfg, TaskConfig(label_fields=["category"]))
    assert lines(tmp_path / "r2" / "test.jsonl") == frozen
    assert report["rejected_by_rule"] == {"test_leakage": 1}
    assert report["rows_in"] == 11 == report["splits"]["train"] + report["splits"]["val"] + report["rejected"]
    assert report["leakage"]["train_test"] == 0


def test_lengths_use_the_model_template_and_over_length_rows_are_dropped_or_truncated(tmp_path, tiny_model_dir):
    rows = [{"prompt": "short", "completion": "ok"}, {"prompt": "word " * 300, "completion": "ok"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    model = ModelConfig(name=str(tiny_model_dir))
    report = prepare([source], tmp_path / "drop", DataConfig(val_ratio=0, test_ratio=0, max_tokens=64), TaskConfig(), model)
    [rejected] = lines(tmp_path / "drop" / "rejected.jsonl")
    assert rejected["rule"] == "too_long" and "max_tokens=64" in rejected["reason"]
    assert report["tokens"]["train"]["max"] < 64
    report = prepare([source], tmp_path / "cut", DataConfig(val_ratio=0, test_ratio=0, max_tokens=64, over_length="truncate"), TaskConfig(), model)
    assert report["rejected"] == 0 and report["tokens"]["truncated"] == 1
    example = report["examples"]["train"]
    assert example["end_of_turn_trained"] is True and example["rendered"].startswith("<|im_start|>")
    html = (tmp_path / "cut" / "report.html").read_text()
    assert "token_lengths.png" in html and (tmp_path / "cut" / "token_lengths.png").stat().st_size > 1000


def test_review_export(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", ticket_rows(30))
    prepare([source], tmp_path / "out", DataConfig(review_sample=5), TaskConfig())
    with open(tmp_path / "out" / "review.csv") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == 5 and all(r["answer"] and r["verdict (ok/fix/drop)"] == "" for r in records)
    assert (tmp_path / "out" / "review.html").is_file()


def test_rows_a_reviewer_drops_are_rejected_when_the_data_is_prepared_again(tmp_path):
    from tuneloop.data.review import read_review, save_verdicts

    source = write_jsonl(tmp_path / "in.jsonl", ticket_rows(30))
    first = prepare([source], tmp_path / "out", DataConfig(review_sample=5), TaskConfig())
    sampled = read_review(tmp_path / "out")
    save_verdicts(tmp_path / "out", {0: ("drop", "wrong category"), 1: ("ok", ""), 2: ("drop", "")})  # as the dashboard does
    with pytest.raises(TuneloopError, match="verdict 'maybe' is not one of ok, fix, drop"):
        save_verdicts(tmp_path / "out", {3: ("maybe", "")})
    again = prepare([source], tmp_path / "again", DataConfig(reviewed=tmp_path / "out" / "review.csv"), TaskConfig())
    assert again["kept"] == first["kept"] - 2 and again["rejected_by_rule"]["reviewer_drop"] == 2
    dropped = [r for r in lines(tmp_path / "again" / "rejected.jsonl") if r["rule"] == "reviewer_drop"]
    assert sorted(str(r["line"]) for r in dropped) == sorted([sampled[0]["line"], sampled[2]["line"]])
    assert any(r["reason"].endswith(": wrong category") for r in dropped)


def test_unsupported_file_type(tmp_path):
    (tmp_path / "in.txt").write_text("hello")
    with pytest.raises(TuneloopError, match="unsupported file type '.txt'"):
        prepare([tmp_path / "in.txt"], tmp_path / "out", FLAT, TaskConfig())


def test_rows_in_equals_rows_out_across_every_fixture(tmp_path):
    """The invariant, over a file mixing every kind of problem."""
    rows = [*ticket_rows(20), "{broken", [], {"messages": []}, {"prompt": "x"}, ticket_rows(1)[0], {"prompt": "a", "chosen": "b", "rejected": "c"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    report = prepare([source], tmp_path / "out", DataConfig(), TaskConfig())
    written = len(split_rows(tmp_path / "out")) + len(lines(tmp_path / "out" / "rejected.jsonl"))
    assert report["rows_in"] == len(rows) == written


def test_worker_processes_give_the_same_outputs_as_in_process(tmp_path, monkeypatch):
    """Rows cross chunk boundaries between workers; order-dependent decisions must not change."""
    from tuneloop.data import rowwork

    monkeypatch.setattr(rowwork, "CHUNK", 7)  # many small chunks, so both workers see many rows
    rows = ticket_rows(60)
    rows += [rows[3], "{oops", {"prompt": "p", "completion": "c", "extra": 1}, rows[40]]  # duplicates across chunks, bad rows
    rows += [{"prompt": f"Email me at a{i}@example.com about order {i}", "completion": "ok"} for i in range(5)]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    task = TaskConfig(label_fields=["category"])
    single = prepare([source], tmp_path / "one", DataConfig(workers=1, review_sample=0), task)
    double = prepare([source], tmp_path / "two", DataConfig(workers=2, review_sample=0), task)
    assert single["rejected_by_rule"] == double["rejected_by_rule"] and single["pii_redacted"] == double["pii_redacted"]
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejected.jsonl"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
