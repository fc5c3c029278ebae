"""The score_model grader against a real HTTP server on 127.0.0.1 (stdlib, in a thread) that answers
/v1/chat/completions the way a judge might: a number, prose without one, an error, or too late."""

import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from pydantic import TypeAdapter

from tuneloop.config import TaskConfig
from tuneloop.errors import TuneloopError
from tuneloop.graders.build import build_grader
from tuneloop.graders.specs import GraderSpec

SPEC = TypeAdapter(GraderSpec)


class Judge(BaseHTTPRequestHandler):
    """Replies by the answer under review (the last line of the prompt): 'good' 8, 'bad' prose, 'boom' HTTP 500,
    'slow' after 3 s, 'junk' a body that is not a chat completion. Every request is kept for inspection."""

    seen: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        Judge.seen.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
        answer = body["messages"][-1]["content"].rsplit("\n", 1)[-1]
        if answer == "boom":
            return self._send(500, b'{"error": {"message": "judge fell over"}}')
        if answer == "slow":
            time.sleep(3)
        if answer == "junk":
            return self._send(200, b'{"id": "x"}')
        content = "I would rate this answer 8 out of 10." if answer == "good" else "A fine effort, I suppose."
        self._send(200, json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode())

    def _send(self, status: int, body: bytes):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the slow reply's client has hung up by the time it is written: expected


@contextmanager
def judge():
    server = QuietServer(("127.0.0.1", 0), Judge)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    Judge.seen.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def grader(url: str, **extra):
    spec = {"type": "score_model", "name": "judge", "model": "judge-1", "base_url": url, "range": [0, 10], "timeout_s": 1,
            "input": [{"role": "system", "content": "Rate the answer from 0 to 10."},
                      {"role": "user", "content": "Ticket: {{item.input}}\nExpected: {{item.reference}}\n{{sample.output_text}}"}], **extra}
    return build_grader(SPEC.validate_python(spec), TaskConfig())


def test_the_first_number_of_the_reply_mapped_from_range_and_each_failure_counted():
    outputs = ["good", "bad", "boom", "slow", "junk", "good"]
    with judge() as url:
        start = time.monotonic()
        grades = grader(url, max_concurrency=3).grade(outputs, [{"input": "where is my parcel", "reference": "in transit"}] * 6)
        assert time.monotonic() - start < 3  # the slow reply cost its 1 s timeout, and the others ran beside it
    assert grades.total == [pytest.approx(0.8), 0.0, 0.0, 0.0, 0.0, pytest.approx(0.8)]
    assert grades.errors == {"judge": 4} and grades.parts == {"judge": grades.total}
    said = "\n".join(grades.messages)
    assert "score_model grader 'judge': sample 1: no number in the judge's reply 'A fine effort, I suppose.'" in said
    assert "sample 2: " in said and "HTTP 500: " in said and "judge fell over" in said
    assert "sample 3: no reply from " in said and "within timeout_s=1 s" in said
    assert "sample 4: " in said and "not a chat completion" in said
    request = next(r for r in Judge.seen if r["messages"][-1]["content"].endswith("good"))
    assert request["path"] == "/v1/chat/completions" and request["model"] == "judge-1" and request["temperature"] == 0
    assert request["messages"][1]["content"] == "Ticket: where is my parcel\nExpected: in transit\ngood"
    assert request["auth"] is None


def test_the_api_key_comes_from_the_named_environment_variable(monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    with judge() as url:
        assert grader(url, api_key_env="JUDGE_KEY").grade(["good"], [{}]).total == [pytest.approx(0.8)]
    assert Judge.seen[0]["auth"] == "Bearer sk-test"
    monkeypatch.delenv("JUDGE_KEY")
    with pytest.raises(TuneloopError, match="environment variable JUDGE_KEY .* is not set"):
        grader("http://127.0.0.1:9/v1", api_key_env="JUDGE_KEY")


def test_a_judge_that_is_not_there_costs_each_sample_not_the_run():
    with judge() as url:
        pass  # the port is closed again
    grades = grader(url).grade(["good", "good"], [{}, {}])
    assert grades.total == [0.0, 0.0] and grades.errors == {"judge": 2} and "ConnectError" in grades.messages[0]
