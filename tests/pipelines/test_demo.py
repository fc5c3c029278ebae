"""The demo as a new user runs it (its quick profile) on the real embedded SmolLM2-135M-Instruct: the
fine-tuned model passes the example's gates and is ahead of all three baselines on every gated metric."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_passes_its_gates_and_beats_every_baseline(tmp_path):
    tuneloop = Path(sys.executable).parent / "tuneloop"
    result = subprocess.run(
        [str(tuneloop), "demo", "--json", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    base, tuned, prompted = summary["base"], summary["finetuned"], summary["systems"]["prompted"]
    assert set(summary["systems"]) == {"base", "prompted", "rag", "finetuned"}  # four systems side by side
    assert summary["objective_passed"], summary["gates"]
    for gate in summary["gates"]:
        for baseline in ("base", "prompted", "rag"):
            assert tuned[gate["metric"]] >= summary["systems"][baseline][gate["metric"]], (gate["metric"], baseline)
    assert tuned["category_accuracy"] > max(summary["systems"][b]["category_accuracy"] for b in ("base", "prompted", "rag"))
    assert tuned["json_valid"] >= 0.9 and tuned["json_valid"] >= base["json_valid"] + 0.5
    assert tuned["category_accuracy"] >= base["category_accuracy"] + 0.3
    assert tuned["schema_valid"] > base["schema_valid"]
    # ... and beats the prompt-engineered baseline (instructions, schema and 3 examples in the prompt).
    assert tuned["exact_match"] >= prompted["exact_match"] + 0.3 and tuned["category_accuracy"] > prompted["category_accuracy"]
    assert Path(summary["run_dir"], "train", "adapter", "adapter_model.safetensors").is_file()
    # The bias probe (eval.bias with the example's bias_probe.jsonl) measured a flip rate for every attribute.
    for attribute in ("name", "gender", "nationality"):
        assert 0 <= tuned[f"bias.{attribute}.flip_rate"] <= 1, attribute
    assert "Bias: counterfactual probe" in Path(summary["run_dir"], "eval", "report.html").read_text()
    assert "tuneloop serve --model ticket-triage:1" in result.stderr
    # It ends with a simulated traffic burst through the real server and its monitoring report.
    traffic = summary["monitoring"]
    assert traffic["requests"] == 18 and traffic["errors"] == 2 and traffic["json_valid"] >= 0.9
    assert Path(summary["run_dir"], "monitor", "report.html").is_file()
