"""`tuneloop monitor` on a constructed request log: report files, drift in both directions, alerts to a
real webhook, feedback export. The served version points at a train run whose training data we wrote."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from typer.testing import CliRunner

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.cli import app
from tuneloop.db.requestlog import RequestStore
from tuneloop.registry.store import Registry

TASK = {"output_schema": {"type": "object", "required": ["category"]}, "label_fields": ["category"]}
COOKING = ("How long should I {verb} {food} at {temp} degrees for a {adj} result, and should I cover it with foil "
           "or leave it open while it rests before serving?")


@pytest.fixture
def served(tmp_path):
    """triage:1, trained on ticket rows, and a registry URL to log traffic into."""
    data = write_jsonl(tmp_path / "train.jsonl", ticket_rows(120, seed=1))
    train_dir = tmp_path / "train"
    train_dir.mkdir()
    (train_dir / "manifest.json").write_text(json.dumps({"stage": "train", "inputs": {"train": {"path": str(data), "sha256": "-"}}}))
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Registry(url).register("triage", train_dir, "base", "lora", task=TASK)
    return url


def tickets(n: int, seed: int) -> list[tuple[str, str]]:
    """(question, answer) pairs from the same distribution as the training data."""
    return [(row["messages"][0]["content"], row["messages"][1]["content"]) for row in ticket_rows(n, seed=seed)]


def log(url: str, traffic: list[tuple[str, str]], *, errors: int = 0, ago: dt.timedelta = dt.timedelta(minutes=1)) -> None:
    now = dt.datetime.now(dt.UTC)
    RequestStore(url).log_requests([
        {"id": f"r-{i}-{random.random()}", "created_at": now - ago + dt.timedelta(seconds=i * 0.1), "model": "triage:1",
         "variant": None, "status": 500 if i < errors else 200, "latency_ms": 100.0 + i, "ttft_ms": 10.0,
         "prompt_tokens": 20, "completion_tokens": 8, "response": answer,
         "request": {"model": "triage", "messages": [{"role": "user", "content": text}]}}
        for i, (text, answer) in enumerate(traffic)])


def run(*args: str):
    return CliRunner().invoke(app, [*args])


def test_report_writes_html_json_and_plot(served, tmp_path):
    log(served, tickets(60, seed=2), errors=3)
    result = run("monitor", "report", "--registry", served, "--since", "1h", "--out", str(tmp_path / "report"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])["summary"]
    assert summary["overall"]["requests"] == 60 and summary["overall"]["error_rate"] == pytest.approx(0.05)
    assert summary["groups"][0]["model"] == "triage:1" and summary["overall"]["json_valid"] == 1.0
    for name in ("report.html", "report.json", "timeseries.png"):
        assert (tmp_path / "report" / name).is_file()


def test_drift_is_flagged_only_for_shifted_traffic(served):
    log(served, tickets(60, seed=3))
    same = run("monitor", "drift", "triage", "--registry", served, "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.output.strip().splitlines()[-1])["verdict"] == "no drift"

    rng = random.Random(0)
    cooking = [COOKING.format(verb=rng.choice(["roast", "bake", "grill"]), food=rng.choice(["lamb", "carrots", "bread"]),
                              temp=rng.choice([180, 200, 220]), adj=rng.choice(["crisp", "tender", "golden"])) for _ in range(60)]
    log(served, [(text, '{"category": "technical"}') for text in cooking], ago=dt.timedelta(seconds=30))
    shifted = run("monitor", "drift", "triage", "--registry", served, "--since", "45s", "--json")
    assert shifted.exit_code == 1, shifted.output
    checks = {c["name"]: c["drift"] for c in json.loads(shifted.output.strip().splitlines()[-1])["checks"]}
    assert checks["embedding_domain_auc"] and checks["input_length"]


def test_alerts_fire_to_the_webhook_and_stay_quiet_otherwise(served, tmp_path, webhook):
    url, received = webhook
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"monitor: {{alerts: ['error_rate > 0.02 over 5m', 'json_valid < 0.95'], webhook: '{url}/hook'}}\n")
    traffic = tickets(50, seed=4)
    log(served, traffic, ago=dt.timedelta(minutes=2))
    quiet = run("monitor", "alerts", str(config), "--registry", served, "--alert-log", str(tmp_path / "alerts.jsonl"))
    assert quiet.exit_code == 0, quiet.output
    assert not received and not (tmp_path / "alerts.jsonl").exists()

    log(served, traffic[:20], errors=5, ago=dt.timedelta(minutes=1))
    loud = run("monitor", "alerts", str(config), "--registry", served, "--alert-log", str(tmp_path / "alerts.jsonl"), "--json")
    assert loud.exit_code == 1, loud.output
    assert [a["rule"] for a in received[0]["json"]["alerts"]] == ["error_rate > 0.02 over 5m"]
    assert "error_rate" in (tmp_path / "alerts.jsonl").read_text()


def test_export_feedback_from_the_cli(served, tmp_path):
    log(served, [("my invoice is wrong, mail me at bob@example.org", "{}")])
    store = RequestStore(served)
    request_id = store.requests()[0]["id"]
    store.add_feedback(request_id, rating="down", corrected='{"category": "billing"}')
    result = run("monitor", "export-feedback", "--registry", served, "--out", str(tmp_path / "fb.jsonl"), "--json")
    assert result.exit_code == 0, result.output
    row = json.loads((tmp_path / "fb.jsonl").read_text())
    assert row["messages"][-1]["content"] == '{"category": "billing"}' and "bob@example.org" not in row["messages"][0]["content"]
