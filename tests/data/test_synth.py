"""`tuneloop data synth` against a real `tuneloop serve` (the tiny random model; its JSON is the grammar's
doing): rows written with their origin, counts that add up, a killed run resumed without asking again,
retries and the budget; and `prepare` keeping synthetic rows out of val/test and away from their rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import TINY_PIPELINE, running, ticket_rows, write_jsonl
from tuneloop.config import load_config
from tuneloop.data.dedup import normalise, normalised_key
from tuneloop.data.prepare import prepare
from tuneloop.data.rowwork import dedup_text
from tuneloop.data.synth import synthesise
from tuneloop.data.synth.plan import plan
from tuneloop.data.synth.rows import similarity
from tuneloop.data.synth.seeds import read_seeds
from tuneloop.errors import TuneloopError
from tuneloop.server import ServeOptions, build_app
from tuneloop.serve.handler import Limits

TUNELOOP = str(Path(sys.executable).parent / "tuneloop")
# The random model's text is nowhere near its seeds: the similarity check is tested on its own below.
SMALL = {"data.synth.rows": 12, "data.synth.min_similarity": None, "data.synth.per_request": 2, "data.synth.max_chars": 40, "data.synth.teacher.max_tokens": 160}


@pytest.fixture(scope="module")
def teacher(tiny_model_dir, tmp_path_factory):
    """(base URL, request log) of a real server answering with the tiny model."""
    root = tmp_path_factory.mktemp("teacher")
    log = root / "requests.jsonl"
    app, _ = build_app(ServeOptions(models=[], base=str(tiny_model_dir), registry=f"sqlite:///{root / 'r.db'}",
                                    request_log=str(log), limits=Limits(max_tokens=512)))
    with running(app) as url:
        yield f"{url}/v1", log


def project(tmp_path: Path, teacher, tiny_model_dir, **overrides):
    write_jsonl(tmp_path / "data.jsonl", ticket_rows(20))
    (tmp_path / "pipeline.yaml").write_text(TINY_PIPELINE.format(model=tiny_model_dir))
    given = {**SMALL, "data.synth.teacher.base_url": teacher[0], "data.synth.teacher.model": str(tiny_model_dir), **overrides}
    return load_config(tmp_path / "pipeline.yaml", given)


def served(log: Path, status: int | None = None) -> int:
    """Requests the server logged (answered with `status`); waits out the log's half-second flush first."""
    time.sleep(1.0)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.is_file() else []
    return sum(status is None or record["status"] == status for record in lines)


def test_the_plan_is_stable_and_evens_out_the_labels(tmp_path, teacher, tiny_model_dir):
    rows = ticket_rows(20)
    skewed = [r for r in rows if "billing" in r["messages"][1]["content"]] + rows[1:5]  # billing 4, the others 1 each
    cfg = project(tmp_path, teacher, tiny_model_dir, **{"data.synth.rows": 20})
    write_jsonl(tmp_path / "seeds.jsonl", [*skewed, rows[0]])  # and an exact duplicate
    seeds, skipped = read_seeds([tmp_path / "seeds.jsonl"], cfg.data, cfg.task)
    assert len(seeds) == 8 and [s.reason for s in skipped] == ["a duplicate of an earlier seed"]
    first, notes = plan(seeds, [], cfg.data.synth, cfg.task)
    again, _ = plan(seeds, [], cfg.data.synth, cfg.task)
    assert [r.key for r in first] == [r.key for r in again] and len({r.key for r in first}) == len(first) and not notes
    assert sum(r.n for r in first if r.kind == "paraphrase") == 10
    balance = Counter()
    for request in first:
        if request.kind == "balance":
            balance[request.label] += request.n
            assert request.schema["properties"]["examples"]["items"]["properties"]["answer"]["properties"]["category"] == {"enum": [request.label]}
    have = Counter(s.label for s in seeds)
    after = {label: have[label] + balance[label] for label in have}
    assert sum(balance.values()) == 10 and balance["billing"] == 0  # the common label gets none
    assert max(after.values()) - min(after.values()) <= 1


def test_rows_from_a_real_server_pass_the_data_stage_and_stay_out_of_val_and_test(tmp_path, teacher, tiny_model_dir):
    cfg = project(tmp_path, teacher, tiny_model_dir, **{"data.synth.judge_threshold": 0.5})
    report = synthesise(cfg.data, cfg.task, tmp_path / "synth.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "synth.jsonl").read_text().splitlines()]
    counts, requests = report["rows"], report["requests"]
    assert requests["planned"] == requests["done"] == sum(requests["by_status"].values())
    assert counts["asked"] == 12 and counts["asked"] >= counts["returned"] == counts["written"] + counts["judged_out"] + counts["too_short"] + counts["off_topic"]
    assert counts["written"] == len(rows) > 0
    dropped = Counter(json.loads(line)["rule"] for line in (tmp_path / "synth.rejected.jsonl").read_text().splitlines())
    assert dropped["judge_score"] == counts["judged_out"] and dropped["too_short"] == counts["too_short"]
    assert all(r["metadata"]["source"] == "synthetic" and r["metadata"]["teacher"] == teacher[0] for r in rows)
    assert all(r["metadata"]["judge_score"] >= 0.5 for r in rows)

    data = cfg.data.model_copy(update={"synthetic": [tmp_path / "synth.jsonl"]})
    prepared = prepare([tmp_path / "data.jsonl"], tmp_path / "data", data, cfg.task)
    made = prepared["synthetic"]
    assert made["rows_in"] == len(rows) and made["rows_in"] == made["kept"] + made["rejected"]
    splits = {name: [json.loads(line) for line in (tmp_path / "data" / f"{name}.jsonl").read_text().splitlines()] for name in ("train", "val", "test")}
    assert sum(r["metadata"]["source"] == "synthetic" for r in splits["train"]) == made["kept"]
    assert not any(r["metadata"]["source"] == "synthetic" for name in ("val", "test") for r in splits[name])
    test_keys = {normalised_key(normalise(dedup_text(r))) for r in splits["test"]}
    assert not any(normalised_key(normalise(dedup_text(r))) in test_keys for r in splits["train"])
    assert prepared["rows_in"] == 20 + len(rows) == prepared["kept"] + prepared["rejected"]


def test_a_killed_run_resumes_without_asking_a_recorded_request_again(tmp_path, teacher, tiny_model_dir):
    project(tmp_path, teacher, tiny_model_dir)
    url, log = teacher
    before = served(log, 200)
    command = [TUNELOOP, "data", "synth", str(tmp_path / "pipeline.yaml"), "--out", str(tmp_path / "synth.jsonl"),
               "--teacher-url", url, "--teacher-model", str(tiny_model_dir), "--rows", "12"]
    pipeline = tmp_path / "pipeline.yaml"
    synth = "synth: {per_request: 2, max_chars: 40, min_similarity: null, teacher: {max_tokens: 160, concurrency: 2}}"
    pipeline.write_text(pipeline.read_text().replace("seed: 0}", f"seed: 0, {synth}}}"))
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    records = tmp_path / "synth.requests.jsonl"
    deadline = time.time() + 300
    while not (records.is_file() and len(records.read_text().splitlines()) >= 2):
        assert child.poll() is None and time.time() < deadline, child.stdout.read().decode()[-2000:]
        time.sleep(0.2)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    done_before = len(records.read_text().splitlines())
    with open(tmp_path / "synth.jsonl", "a") as handle:  # a torn last line, as a kill mid-write leaves
        handle.write('{"messages": [{"role": "user", "con')
    finished = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    report = json.loads(finished.stdout.strip().splitlines()[-1])
    keys = [json.loads(line)["key"] for line in records.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == report["requests"]["planned"]
    assert report["requests"]["done_this_run"] == report["requests"]["planned"] - done_before
    # Every recorded request was answered once; only those in flight at the kill (at most `concurrency`) twice.
    # (A request whose client the kill took away is stopped and logged 499, not answered.)
    assert report["requests"]["planned"] <= served(log, 200) - before <= report["requests"]["planned"] + 2
    assert report["rows"]["written"] == sum(1 for _ in open(tmp_path / "synth.jsonl"))


class Flaky(BaseHTTPRequestHandler):
    """An endpoint that answers 429 (Retry-After: 0), then 503, then a chat completion with a paraphrase."""

    calls: Counter = Counter()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        key = body["messages"][-1]["content"]
        Flaky.calls[key] += 1
        if Flaky.calls[key] == 1:
            self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        elif Flaky.calls[key] == 2:
            self._send(503, {"error": {"message": "busy"}})
        else:
            n = body["response_format"]["json_schema"]["schema"]["properties"]["inputs"]["minItems"]
            content = json.dumps({"inputs": [f"rewrite {i} of {key.split(chr(10))[4]}" for i in range(n)]})
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": content}}], "usage": {"total_tokens": 10}})

    def _send(self, status, payload, headers=None):
        data = json.dumps(payload).encode()
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_retries_back_off_and_the_budget_stops_and_resumes(tmp_path, tiny_model_dir):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        cfg = project(tmp_path, (url, None), tiny_model_dir, **{"data.synth.paraphrase": 1.0, "data.synth.rows": 3, "data.synth.min_similarity": 0.4,
                                                                 "data.synth.max_requests": 2})
        first = synthesise(cfg.data, cfg.task, tmp_path / "synth.jsonl")
        assert first["requests"]["done"] == 2 and first["requests"]["not_sent_budget"] == 1 and first["budget"]["exhausted"]
        assert first["rows"]["written"] == 2 and all(n == 3 for n in Flaky.calls.values())  # 429, 503, then 200
        cfg.data.synth.max_requests = None
        second = synthesise(cfg.data, cfg.task, tmp_path / "synth.jsonl")
        assert second["requests"]["done_this_run"] == 1 and second["rows"]["written"] == 3 and len(Flaky.calls) == 3
    finally:
        server.shutdown()


def test_an_unreachable_teacher_fails_fast_and_records_nothing(tmp_path, tiny_model_dir):
    cfg = project(tmp_path, ("http://127.0.0.1:9/v1", None), tiny_model_dir, **{"data.synth.teacher.retries": 0})
    with pytest.raises(TuneloopError, match="the teacher fails every request"):
        synthesise(cfg.data, cfg.task, tmp_path / "synth.jsonl")
    assert not (tmp_path / "synth.requests.jsonl").read_text().strip()


def test_prepare_rejects_a_paraphrase_of_a_test_row_and_copies_of_real_rows(tmp_path, tiny_model_dir):
    cfg = load_config(write_cfg(tmp_path, tiny_model_dir))
    rows = ticket_rows(20)
    write_jsonl(tmp_path / "data.jsonl", rows)
    prepared = prepare([tmp_path / "data.jsonl"], tmp_path / "plain", cfg.data, cfg.task)
    test_row = json.loads((tmp_path / "plain" / "test.jsonl").read_text().splitlines()[0])
    train_row = json.loads((tmp_path / "plain" / "train.jsonl").read_text().splitlines()[0])
    key = lambda row: normalised_key(normalise(dedup_text(row)))  # noqa: E731
    answer = test_row["messages"][-1]["content"]
    synthetic = [
        {"messages": [{"role": "user", "content": "A rewrite of a test input, worded quite differently."}, {"role": "assistant", "content": answer}],
         "metadata": {"source": "synthetic", "seed": key(test_row)}},
        {"messages": [{"role": "user", "content": "A rewrite of a train input, also worded differently."}, {"role": "assistant", "content": answer}],
         "metadata": {"source": "synthetic", "seed": key(train_row)}},
        {"messages": [m for m in rows[3]["messages"]], "metadata": {"source": "synthetic"}},  # a copy of a real row
    ]
    write_jsonl(tmp_path / "synth.jsonl", synthetic)
    data = cfg.data.model_copy(update={"synthetic": [tmp_path / "synth.jsonl"]})
    report = prepare([tmp_path / "data.jsonl"], tmp_path / "mixed", data, cfg.task)
    assert report["splits"]["val"] == prepared["splits"]["val"] and report["splits"]["test"] == prepared["splits"]["test"]
    assert report["synthetic"] == {**report["synthetic"], "rows_in": 3, "kept": 1, "rejected": 2,
                                   "rejected_by_rule": {"test_leakage": 1, "duplicate": 1}}
    rejected = [json.loads(line) for line in (tmp_path / "mixed" / "rejected.jsonl").read_text().splitlines()]
    leak = next(r for r in rejected if r["rule"] == "test_leakage")
    assert leak["line"] == 1 and leak["source"] == str(tmp_path / "synth.jsonl") and "test split" in leak["reason"]
    assert "Synthetic rows (3 in = 1 kept in train + 2 rejected)" in (tmp_path / "mixed" / "report.html").read_text()
    train = [json.loads(line) for line in (tmp_path / "mixed" / "train.jsonl").read_text().splitlines()]
    kept = [r for r in train if r["metadata"]["source"] == "synthetic"]
    assert [r["metadata"]["line"] for r in kept] == [2] and kept[0]["metadata"]["file"] == str(tmp_path / "synth.jsonl")


def write_cfg(tmp_path: Path, tiny_model_dir) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(TINY_PIPELINE.format(model=tiny_model_dir))
    return path


def test_rewrites_that_lose_the_seed_s_meaning_are_dropped_as_off_topic():
    seed = "The parcel I ordered two weeks ago has still not arrived."
    kept, fragment, other = similarity(["My package from two weeks back never showed up.", "{{% tabs %} %}{{% intro %} %}",
                                        "Your denim jeans are awesome for a summer look."], [seed])
    assert kept > 0.4 > max(fragment, other)
