"""A client that gives up (its timeout, a retrying SDK) stops its generation: the server logs 499 and frees the
batch instead of finishing an answer nobody reads, and the next request is answered at once."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import running
from tuneloop.serve.handler import Limits
from tuneloop.server import ServeOptions, build_app


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("disconnect")
    log = root / "requests.jsonl"
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=f"sqlite:///{root / 'r.db'}", request_log=str(log),
                                    run_jobs=False, limits=Limits(max_tokens=1000)))
    with running(app) as url:
        yield url, str(tiny_model_dir), log


def records(log):
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def test_a_client_that_times_out_stops_its_generation(server):
    url, model, log = server
    # The tiny model at temperature 0 rarely ends early: the full answer would take 900 decode steps.
    body = {"model": model, "messages": [{"role": "user", "content": "Write a long story"}], "max_tokens": 900, "temperature": 0}
    with httpx.Client(base_url=url, timeout=60) as client:
        started = time.perf_counter()
        full = client.post("/v1/chat/completions", json=body)
        whole = time.perf_counter() - started
        assert full.status_code == 200
        if full.json()["usage"]["completion_tokens"] < 900 or whole < 1.5:
            pytest.skip(f"the answer ended after {full.json()['usage']['completion_tokens']} tokens in {whole:.1f} s: too quick to abandon")
        with pytest.raises(httpx.ReadTimeout):
            client.post("/v1/chat/completions", json=body, timeout=whole / 5)
        deadline = time.time() + whole
        while not any(r["status"] == 499 for r in records(log)):
            assert time.time() < deadline, "the abandoned request was not stopped"
            time.sleep(0.05)
        gone = next(r for r in records(log) if r["status"] == 499)
        assert gone["completion_tokens"] < 900 and gone["latency_ms"] < 1000 * whole * 0.8, gone
        assert "closed the connection" in gone["error"]
        again = client.post("/v1/chat/completions", json={**body, "max_tokens": 4})
        assert again.status_code == 200
