"""Feedback round trip: POST /v1/feedback on the real server -> stored with the logged request ->
exported as a redacted chat data set -> accepted by the data stage as the next round's training data."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.conftest import running
from tuneloop.config import DataConfig, TaskConfig
from tuneloop.data.prepare import prepare
from tuneloop.monitor.feedback import export_feedback
from tuneloop.db.requestlog import RequestStore
from tuneloop.registry.store import Registry
from tuneloop.server import ServeOptions, build_app


@pytest.fixture
def served(tiny_model_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=url))
    with running(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        yield http, Registry(url), str(tiny_model_dir)


def ask(http, model: str, text: str) -> str:
    # Sampled (seeded): the tiny random model's greedy answer is blank, which no data set would keep.
    response = http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": text}],
                                                       "max_tokens": 4, "temperature": 1.0, "seed": 1})
    assert response.status_code == 200
    return response.json()["id"]


def test_feedback_becomes_the_next_training_set(served, tmp_path):
    http, registry, model = served
    corrected, liked, disliked = (ask(http, model, f"ticket {i}: my parcel is late") for i in range(3))
    fixed = '{"category": "shipping"} Contact me at jane.doe@example.com'
    assert http.post("/v1/feedback", json={"request_id": corrected, "rating": "down", "corrected": fixed}).status_code == 200
    assert http.post("/v1/feedback", json={"request_id": liked, "rating": "up", "comment": "good"}).status_code == 200
    assert http.post("/v1/feedback", json={"request_id": disliked, "score": 0.1}).status_code == 200

    stored = RequestStore(registry.database).feedback()
    assert [f["request_id"] for f in stored] == [corrected, liked, disliked]
    assert stored[0]["request"]["request"]["messages"][0]["content"] == "ticket 0: my parcel is late"

    result = export_feedback(RequestStore(registry.database), tmp_path / "feedback.jsonl")
    assert (result["rows"], result["corrected"], result["approved"]) == (2, 1, 1)
    assert result["skipped"] == {"not approved and not corrected": 1} and result["pii_redacted"]["email"] == 1
    rows = [json.loads(line) for line in (tmp_path / "feedback.jsonl").read_text().splitlines()]
    assert rows[0]["messages"][-1]["content"].startswith('{"category": "shipping"} Contact me at ')
    assert "jane.doe@example.com" not in rows[0]["messages"][-1]["content"]
    assert rows[1]["messages"][-1]["content"] == RequestStore(registry.database).request(liked)["response"]

    report = prepare([tmp_path / "feedback.jsonl"], tmp_path / "data", DataConfig(val_ratio=0, test_ratio=0), TaskConfig())
    assert report["kept"] == 2 and report["rejected"] == 0


@pytest.mark.parametrize("body, status, says", [
    ({"request_id": "chatcmpl-nope", "rating": "up"}, 404, "no logged request"),
    ({"request_id": "x"}, 400, "at least one of"),
    ({"request_id": "x", "rating": "meh"}, 400, "rating"),
    ({"request_id": "x", "score": 3}, 400, "score"),
])
def test_bad_feedback_is_refused_clearly(served, body, status, says):
    http, _, _ = served
    response = http.post("/v1/feedback", json=body)
    assert response.status_code == status and says in response.json()["error"]["message"]
