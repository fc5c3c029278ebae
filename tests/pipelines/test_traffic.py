"""The demo's traffic burst on the tiny model: real server, concurrent clients, report of the burst only."""

from __future__ import annotations

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.db import Database
from tuneloop.db.requestlog import RequestStore
from tuneloop.pipelines.traffic import traffic_burst
from tuneloop.registry.store import Registry


def test_burst_is_served_logged_and_reported(tiny_model_dir, adapters, tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'registry.db'}")
    Registry(database).register("triage", adapters["a"], str(tiny_model_dir), "lora")
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "test.jsonl", ticket_rows(6))
    result = traffic_burst(database, str(tiny_model_dir), "triage:1", tmp_path / "data", tmp_path / "monitor",
                           requests=6, concurrency=3, max_tokens=8)
    assert result["statuses"] == [200] * 6 + [400, 404]
    overall = result["summary"]["overall"]
    assert overall["requests"] == 8 and overall["errors"] == 2 and overall["completion_tokens"] >= 6
    assert [g["model"] for g in result["summary"]["groups"]] == ["no-such-model", "triage:1"]
    assert (tmp_path / "monitor" / "report.html").is_file() and len(RequestStore(database).feedback()) == 1
