"""The demo on the real embedded SmolLM2-135M-Instruct, shortened: the fine-tuned model must win."""

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_finetuned_beats_base(tmp_path):
    tuneloop = Path(sys.executable).parent / "tuneloop"
    result = subprocess.run(
        [str(tuneloop), "demo", "--json", "--out", str(tmp_path / "run"), "--max-steps", "30", "--limit", "30"],
        capture_output=True, text=True, timeout=1500, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    base, tuned, prompted = summary["base"], summary["finetuned"], summary["systems"]["prompted"]
    assert set(summary["systems"]) == {"base", "prompted", "rag", "finetuned"}  # four systems side by side
    assert tuned["json_valid"] >= 0.9 and tuned["json_valid"] >= base["json_valid"] + 0.5
    assert tuned["category_accuracy"] >= base["category_accuracy"] + 0.3
    assert tuned["schema_valid"] > base["schema_valid"]
    # ... and beats the prompt-engineered baseline (instructions, schema and 3 examples in the prompt).
    assert tuned["exact_match"] >= prompted["exact_match"] + 0.3 and tuned["category_accuracy"] > prompted["category_accuracy"]
    assert summary["regression"]["systems"]["finetuned"]["perplexity"] > 1
    assert Path(summary["run_dir"], "train", "adapter", "adapter_model.safetensors").is_file()
    assert "tuneloop serve --model ticket-triage:1" in result.stderr
    # It ends with a simulated traffic burst through the real server and its monitoring report.
    traffic = summary["monitoring"]
    assert traffic["requests"] == 18 and traffic["errors"] == 2 and traffic["json_valid"] >= 0.9
    assert Path(summary["run_dir"], "monitor", "report.html").is_file()
