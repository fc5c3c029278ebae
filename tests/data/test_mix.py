"""data.mix: the train split drawn from its sources in the configured shares, exactly, with and without
replacement; val/test untouched; undrawn rows in unused.jsonl; replayed rows train only."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.config import DataConfig, MixConfig, TaskConfig
from tuneloop.data.prepare import prepare

TASK = TaskConfig(label_fields=[])


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def sources(tmp_path: Path) -> tuple[Path, Path]:
    rows = ticket_rows(140)
    for i, row in enumerate(rows):
        row["messages"][0]["content"] = f"Ticket {i} from {'A' if i < 100 else 'B'}: " + row["messages"][0]["content"]
    return write_jsonl(tmp_path / "a.jsonl", rows[:100]), write_jsonl(tmp_path / "b.jsonl", rows[100:])


def test_without_replacement_the_scarcest_source_sets_the_size(tmp_path):
    a, b = sources(tmp_path)
    cfg = DataConfig(val_ratio=0.0, test_ratio=0.0, mix=MixConfig(ratios={b: 0.5}, seed=3))
    report = prepare([a, b], tmp_path / "out", cfg, TASK)
    train = lines(tmp_path / "out" / "train.jsonl")
    drawn = Counter(row["metadata"]["source"] for row in train)
    assert drawn == {str(a): 40, str(b): 40} and report["mix"]["rows"] == 80 and report["mix"]["repeated"] == 0
    assert report["mix"]["drawn_ratio"] == {"(other sources)": 0.5, str(b.resolve()): 0.5}
    unused = lines(tmp_path / "out" / "unused.jsonl")
    assert len(unused) == report["mix"]["unused"] == 60 and {r["metadata"]["source"] for r in unused} == {str(a)}
    assert not {r["metadata"]["line"] for r in unused} & {r["metadata"]["line"] for r in train if r["metadata"]["source"] == str(a)}
    assert report["rows_in"] == 140 == report["kept"] + report["rejected"]
    assert "Train mix (80 rows drawn, without replacement, 0 repeats, 60 kept rows unused)" in (tmp_path / "out" / "report.html").read_text()
    again = prepare([a, b], tmp_path / "again", cfg, TASK)
    assert lines(tmp_path / "again" / "train.jsonl") == train and again["mix"] == report["mix"]  # seeded


def test_with_replacement_a_small_source_repeats_evenly_to_reach_its_share(tmp_path):
    a, b = sources(tmp_path)
    cfg = DataConfig(val_ratio=0.1, test_ratio=0.1, mix=MixConfig(ratios={b: 0.5}, rows=200, replace=True))
    report = prepare([a, b], tmp_path / "out", cfg, TASK)
    train = lines(tmp_path / "out" / "train.jsonl")
    by_source = Counter(row["metadata"]["source"] for row in train)
    assert by_source == {str(a): 100, str(b): 100} and report["splits"]["train"] == 200
    copies = Counter((r["metadata"]["source"], r["metadata"]["line"]) for r in train if r["metadata"]["source"] == str(b))
    assert set(copies.values()) <= {3, 4}  # ~32 train rows of b, each 3 or 4 times
    assert report["splits"]["val"] + report["splits"]["test"] == 28  # val and test are not mixed
    assert report["kept"] == 140 and not (tmp_path / "out" / "unused.jsonl").read_text()


def test_replayed_rows_train_only_and_lose_to_real_copies(tmp_path):
    a, b = sources(tmp_path)
    previous = write_jsonl(tmp_path / "previous_train.jsonl", [*lines(b)[:10], *ticket_rows(1, seed=9)])  # 10 copies of b's rows
    cfg = DataConfig(val_ratio=0.2, test_ratio=0.2, replay=[previous], mix=MixConfig(ratios={previous: 0.5}))
    report = prepare([a, b], tmp_path / "out", cfg, TASK)
    assert report["rejected_by_rule"] == {"duplicate": 10}  # the real rows win
    train = lines(tmp_path / "out" / "train.jsonl")
    replayed = [r for r in train if r["metadata"].get("replay")]
    assert len(replayed) == 1 and report["mix"]["drawn"][str(previous.resolve())] == 1
    assert not any(r["metadata"].get("replay") for name in ("val", "test") for r in lines(tmp_path / "out" / f"{name}.jsonl"))


def test_shares_are_checked_where_they_are_declared():
    with pytest.raises(ValueError, match="add up to 1.2"):
        MixConfig(ratios={"a.jsonl": 0.6, "b.jsonl": 0.6})
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        MixConfig(ratios={"a.jsonl": 0.0})
