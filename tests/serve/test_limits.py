"""Overload and shutdown: a full queue answers 429 with Retry-After, a slow request times out with 504,
and SIGTERM lets requests in flight finish before the server exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import free_port, running
from tuneloop.serve.handler import Limits
from tuneloop.server import ServeOptions, build_app

ROOT = Path(__file__).resolve().parents[2]
ASK = [{"role": "user", "content": "My parcel is late"}]


def test_a_full_queue_answers_429_with_retry_after(tiny_model_dir, tmp_path):
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=f"sqlite:///{tmp_path / 'r.db'}", request_log="off",
                                    max_batch=1, max_queue=1))
    with running(app) as url:
        body = {"model": str(tiny_model_dir), "messages": ASK, "max_tokens": 200, "temperature": 0, "stop": ["never appears"]}
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(lambda _: httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120), range(8)))
    busy = [r for r in responses if r.status_code == 429]
    assert busy and any(r.status_code == 200 for r in responses), [r.status_code for r in responses]
    assert busy[0].headers["retry-after"] == "1" and "queue limit 1" in busy[0].json()["error"]["message"]


def test_a_request_past_its_time_gets_504(tiny_model_dir, tmp_path):
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=f"sqlite:///{tmp_path / 'r.db'}", request_log="off",
                                    limits=Limits(timeout=0.001)))
    with running(app) as url:
        body = {"model": str(tiny_model_dir), "messages": ASK, "max_tokens": 500}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert response.status_code == 504 and "ran out of time" in response.json()["error"]["message"]


def test_sigterm_drains_requests_in_flight(tiny_model_dir, tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "serve", "--base", str(tiny_model_dir), "--port", str(port),
         "--registry", f"sqlite:///{tmp_path / 'r.db'}", "--request-log", str(tmp_path / "log.jsonl")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None and time.time() < deadline, "server did not start"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": str(tiny_model_dir), "messages": ASK, "max_tokens": 400, "temperature": 0, "stream": True,
                "stop": ["never appears"]}
        lines = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=120) as response:
            for line in filter(None, response.iter_lines()):
                if not lines:
                    server.send_signal(signal.SIGTERM)  # mid-stream
                lines.append(line)
        assert lines[-1] == "data: [DONE]" and '"finish_reason": "length"' in lines[-2]
        assert len(lines) > 100, "every token should still arrive after SIGTERM"
        # uvicorn re-raises the signal once it has shut down, so the exit status says "ended by SIGTERM".
        assert server.wait(60) in (0, -signal.SIGTERM)
        assert (tmp_path / "log.jsonl").read_text().count('"status": 200') == 1, "the log is flushed on exit"
    finally:
        if server.poll() is None:
            server.kill()


def test_sigterm_under_16_requests_in_flight_finishes_them_all_and_exits_within_the_drain_limit(tiny_model_dir, tmp_path):
    port, drain = free_port(), 25
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    server = subprocess.Popen(
        [sys.executable, "-m", "tuneloop.cli", "serve", "--base", str(tiny_model_dir), "--port", str(port),
         "--registry", f"sqlite:///{tmp_path / 'r.db'}", "--request-log", "off", "--drain-timeout", str(drain)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            assert server.poll() is None and time.time() < deadline, "server did not start"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        body = {"model": str(tiny_model_dir), "messages": ASK, "max_tokens": 300, "temperature": 0, "stop": ["never appears"]}
        with httpx.Client(base_url=url, timeout=120) as keep_alive, ThreadPoolExecutor(17) as pool:
            assert keep_alive.get("/health").status_code == 200  # a connection that stays open across the signal
            futures = [pool.submit(httpx.post, f"{url}/v1/chat/completions", json=body, timeout=120) for _ in range(16)]
            time.sleep(1.0)  # all 16 are being generated (300 tokens each take several seconds)
            assert not any(f.done() for f in futures), "the requests finished before the signal: make them longer"
            server.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            time.sleep(0.3)
            try:  # after the signal: a new connection is refused, a request on an open one gets a 503
                late = keep_alive.post("/v1/chat/completions", json=body)
                assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down"
            except httpx.TransportError:
                pass
            responses = [f.result() for f in futures]
        assert [r.status_code for r in responses] == [200] * 16
        assert all(r.json()["usage"]["completion_tokens"] == 300 for r in responses)
        assert server.wait(drain + 10) in (0, -signal.SIGTERM)
        assert time.monotonic() - signalled < drain
    finally:
        if server.poll() is None:
            server.kill()
