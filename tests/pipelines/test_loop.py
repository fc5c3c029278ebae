"""The closed loop on the tiny model: a round that beats production is promoted, a round trained on
corrupted answers is refused and production stays; the test split stays frozen across rounds."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.cli import app
from tuneloop.config import GrpoConfig, ObjectiveConfig, RlRound, load_config
from tuneloop.db.requestlog import RequestStore
from tuneloop.pipelines.loop import decide, run_loop
from tuneloop.pipelines.run import run_pipeline
from tuneloop.registry.store import Registry

LOOP_PIPELINE = """
name: loop
model: {{name: "{model}"}}
task:
  system_prompt: Reply with JSON.
  output_schema: {{type: object, required: [category], properties: {{category: {{enum: [billing, shipping, returns, technical, account]}}}}}}
  label_fields: [category]
objective:
  gates: {{json_valid: ">= 0.8", category_accuracy: ">= 0.6"}}
data: {{inputs: [{data}], val_ratio: 0.1, test_ratio: 0.2, seed: 0}}
train: {{method: full, epochs: {epochs}, batch_size: 8, learning_rate: 1.0e-2, max_seq_len: 128}}
eval: {{systems: [finetuned], max_new_tokens: 16, batch_size: 16, limit: 20, regression: false, bootstrap: 100}}
registry: {{name: triage, url: "sqlite:///{db}"}}
"""


def rows(n: int, corrupt: bool = False, seed: int = 0) -> list[dict]:
    """Ticket rows whose answer is {"category": ...}; corrupted rows answer in prose instead."""
    out = ticket_rows(n, seed)
    for row in out:
        category = json.loads(row["messages"][1]["content"])["category"]
        row["messages"][1]["content"] = f"I think this is about {category}." if corrupt else json.dumps({"category": category})
    return out


def split_rows(run_dir) -> list[list[dict]]:
    return [json.loads(line)["messages"] for line in (run_dir / "data" / "test.jsonl").read_text().splitlines()]


def config(tmp_path, tiny_model_dir, data: str, epochs: float, steps: int | None = None):
    path = tmp_path / f"{data}.yaml"
    path.write_text(LOOP_PIPELINE.format(model=tiny_model_dir, data=data, epochs=epochs, db=tmp_path / "registry.db"))
    return load_config(path, {"train.max_steps": steps} if steps else None)


def test_a_better_round_is_promoted_and_a_worse_one_refused(tmp_path, tiny_model_dir):
    write_jsonl(tmp_path / "good.jsonl", rows(150))
    write_jsonl(tmp_path / "corrupt.jsonl", rows(150, corrupt=True))
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")

    # Round 0: a barely trained model is in production.
    first = run_pipeline(config(tmp_path, tiny_model_dir, "good.jsonl", 1, steps=2), tmp_path / "round0")
    registry.set_alias("triage", "production", 1, reason="first deploy")
    assert not first["objective_passed"]
    # A user corrected one of its answers through the feedback API.
    RequestStore(registry.database).log_requests([{"id": "chatcmpl-1", "model": "triage:1", "status": 200, "latency_ms": 5.0, "response": "{",
                            "request": {"messages": [{"role": "user", "content": "Ticket 999: a billing problem (low) with lamp."}]}}])
    RequestStore(registry.database).add_feedback("chatcmpl-1", rating="down", corrected='{"category": "billing"}')

    better = run_loop(config(tmp_path, tiny_model_dir, "good.jsonl", 8), tmp_path / "round1")
    assert better["promoted"], better["reasons"]
    assert better["candidate"] == "triage:2" and registry.resolve("triage@production")["version"] == 2
    assert better["feedback"]["rows"] == 1 and better["candidate_metrics"]["json_valid"] >= 0.8
    frozen = split_rows(tmp_path / "round0")
    assert split_rows(tmp_path / "round1") == frozen

    (tmp_path / "corrupt.yaml").write_text(LOOP_PIPELINE.format(model=tiny_model_dir, data="corrupt.jsonl", epochs=4,
                                                                db=tmp_path / "registry.db"))
    result = CliRunner().invoke(app, ["loop", str(tmp_path / "corrupt.yaml"), "--out", str(tmp_path / "round2"), "--json"])
    assert result.exit_code == 1, result.output
    worse = json.loads(result.output.strip().splitlines()[-1])
    assert not worse["promoted"] and any("json_valid" in reason for reason in worse["reasons"])
    assert registry.resolve("triage@production")["version"] == 2 and registry.resolve("triage@challenger")["version"] == 3
    assert split_rows(tmp_path / "round2") == frozen
    assert [e["to_version"] for e in registry.history("triage", "production")] == [1, 2]


def _results(json_valid: float, latency: float, passed: bool = True) -> dict:
    return {"gates": [{"metric": "json_valid", "gate": ">= 0.8", "value": json_valid, "passed": passed}],
            "systems": {"finetuned": {"json_valid": json_valid, "length_chars": latency}}}


def test_decide_needs_gates_and_no_worse_than_production():
    objective = ObjectiveConfig(gates={"json_valid": ">= 0.8", "length_chars": "<= 100"})
    assert decide(_results(0.9, 50), None, objective, 0.0)[0]
    assert not decide(_results(0.7, 50, passed=False), None, objective, 0.0)[0]
    assert decide(_results(0.95, 50), _results(0.9, 60), objective, 0.0)[0]
    promote, reasons = decide(_results(0.9, 50), _results(0.95, 50), objective, 0.0)
    assert not promote and "json_valid is worse than production" in reasons[0]
    assert decide(_results(0.9, 50), _results(0.95, 50), objective, 0.1)[0]  # within tolerance
    promote, reasons = decide(_results(0.95, 80), _results(0.95, 50), objective, 0.0)
    assert not promote and "length_chars" in reasons[0]  # lower is better for a <= gate


def test_a_grpo_round_after_sft_is_trained_evaluated_and_registered_on_the_merged_sft_model(tmp_path, tiny_model_dir):
    write_jsonl(tmp_path / "good.jsonl", rows(60))
    cfg = config(tmp_path, tiny_model_dir, "good.jsonl", 1, steps=2)
    cfg = cfg.model_copy(update={"rl": RlRound(max_steps=2, eval_every=0), "train": cfg.train.model_copy(
        update={"grpo": GrpoConfig(group_size=2, max_new_tokens=4)})})
    result = run_pipeline(cfg, tmp_path / "run")
    merged = (tmp_path / "run" / "sft-export" / "model").resolve()
    grpo = json.loads((tmp_path / "run" / "train-grpo" / "manifest.json").read_text())
    assert grpo["config"]["objective"] == "grpo" and grpo["model"]["name"] == str(merged)
    assert (tmp_path / "run" / "train-grpo" / "adapter" / "adapter_config.json").is_file()
    version = Registry(f"sqlite:///{tmp_path / 'registry.db'}").resolve(result["model"])
    assert version["base_model"] == str(merged) and version["artifact_path"] == str((tmp_path / "run" / "train-grpo").resolve())
    assert "json_valid" in result["finetuned"]


def test_replay_keeps_what_an_earlier_round_taught(tmp_path, tiny_model_dir):
    """Round 2's new data has two categories only: without replay the model forgets the other three and the
    gate fails on the frozen test split; with loop.replay half its train split comes from round 1's."""
    write_jsonl(tmp_path / "all.jsonl", rows(150))
    narrow = [r for r in rows(200, seed=1) if json.loads(r["messages"][1]["content"])["category"] in ("returns", "technical")]
    write_jsonl(tmp_path / "narrow.jsonl", narrow)
    registry = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    first = run_pipeline(config(tmp_path, tiny_model_dir, "all.jsonl", 8), tmp_path / "round1")
    registry.set_alias("triage", "production", 1, reason="first deploy")
    taught = first["finetuned"]["category_accuracy"]

    forgetful = run_loop(config(tmp_path, tiny_model_dir, "narrow.jsonl", 8), tmp_path / "round2")
    assert not forgetful["promoted"] and forgetful["candidate_metrics"]["category_accuracy"] <= 0.4
    cfg = config(tmp_path, tiny_model_dir, "narrow.jsonl", 8)
    cfg.loop.replay = 0.5
    replayed = run_loop(cfg, tmp_path / "round3")
    mix = json.loads((tmp_path / "round3" / "data" / "report.json").read_text())["mix"]
    previous = str((tmp_path / "round1" / "data" / "train.jsonl").resolve())
    assert mix["drawn"][previous] == mix["drawn"]["(other sources)"] == mix["rows"] // 2
    print(f"category_accuracy: round 1 {taught:.3f}, without replay {forgetful['candidate_metrics']['category_accuracy']:.3f}, "
          f"with replay {replayed['candidate_metrics']['category_accuracy']:.3f}")
    assert replayed["candidate_metrics"]["category_accuracy"] >= 0.6, (taught, replayed["candidate_metrics"])
    assert all(gate["passed"] for gate in replayed["gates"]) and not all(gate["passed"] for gate in forgetful["gates"])
    assert split_rows(tmp_path / "round3") == split_rows(tmp_path / "round1")
