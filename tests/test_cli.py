"""The CLI end to end on the tiny model, and one clear line (no traceback) for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TUNELOOP = str(Path(sys.executable).parent / "tuneloop")


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([TUNELOOP, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_run_chains_every_stage_and_prints_json(tiny_pipeline, tmp_path):
    result = run("run", tiny_pipeline, "--out", tmp_path / "run", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"base", "finetuned", "objective_passed", "wall_s", "run_dir", "model"} <= summary.keys()
    assert summary["model"] == "tiny:1" and summary["objective_passed"] is True
    for stage in ("data", "train", "eval"):
        assert (tmp_path / "run" / stage / "manifest.json").is_file()
    listed = run("registry", "list", "--json", cwd=tmp_path)
    assert [v["ref"] for v in json.loads(listed.stdout)["versions"]] == ["tiny:1"]


@pytest.mark.parametrize("setup, args, message", [
    (None, ["run", "missing.yaml"], "missing.yaml: config file not found"),
    ("train: {lora: [r: 4\n", ["run", "bad.yaml"], "bad.yaml: line 1 is not valid YAML"),
    ("model: {name: llama-9000}\ndata: {inputs: [d.jsonl]}\n", ["run", "bad.yaml"], "unknown model name 'llama-9000'"),
    ("data: {inputs: [nowhere.jsonl]}\n", ["run", "bad.yaml"], "nowhere.jsonl: file not found (data.inputs)"),
])
def test_bad_input_is_one_clear_line(tmp_path, setup, args, message):
    if setup is not None:
        (tmp_path / "bad.yaml").write_text(setup)
        (tmp_path / "d.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    result = run(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.strip()]) <= 3  # rich may wrap one line


def test_data_prepare_verb(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    result = run("data", "prepare", source, "--out", tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["rejected_by_rule"] == {"unreadable": 1}


def test_resume_needs_the_run_directory(tiny_pipeline, tmp_path):
    prepared = run("data", "prepare", tmp_path / "data.jsonl", "--out", tmp_path / "data", "--config", tiny_pipeline)
    assert prepared.returncode == 0, prepared.stderr
    result = run("train", tiny_pipeline, "--data", tmp_path / "data", "--resume")
    assert result.returncode == 2 and "--resume needs --out" in result.stderr


def test_train_dry_run_prints_the_estimate_and_writes_nothing(tiny_pipeline, tmp_path):
    prepared = run("data", "prepare", tmp_path / "data.jsonl", "--out", tmp_path / "data", "--config", tiny_pipeline)
    assert prepared.returncode == 0, prepared.stderr
    result = run("train", tiny_pipeline, "--data", tmp_path / "data", "--dry-run", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    estimate = json.loads(result.stdout.strip().splitlines()[-1])
    assert estimate["dry_run"] and estimate["peak_gb"] > 0 and estimate["estimated_seconds"] > 0
    assert "pre-flight:" in result.stderr and "estimated training time" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_eval_by_registry_ref_and_blind_ab_round_trip(tiny_pipeline, tmp_path):
    import csv

    assert run("run", tiny_pipeline, "--out", tmp_path / "run", cwd=tmp_path).returncode == 0
    evaluated = run("eval", tiny_pipeline, "--data", tmp_path / "run" / "data", "--model", "tiny:1", "--out", tmp_path / "ev", "--json", cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr
    assert set(json.loads(evaluated.stdout.strip().splitlines()[-1])["systems"]) == {"base", "prompted", "rag", "finetuned"}
    assert (tmp_path / "ev" / "report.html").is_file()

    # A 3-step tiny model answers the same garbage with and without its adapter, and identical pairs are
    # not shown to reviewers: give the fine-tuned side distinct answers so there is something to judge.
    samples = [json.loads(line) for line in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    for i, sample in enumerate(samples):
        sample["outputs"]["finetuned"] = f"answer number {i}"
    (tmp_path / "ev" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    exported = run("eval", "ab-export", tmp_path / "ev", "--out", tmp_path / "ab", "--json")
    assert exported.returncode == 0, exported.stderr
    with open(tmp_path / "ab" / "ab.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows
    for row in rows:
        row["judgment"] = "tie"
    with open(tmp_path / "ab" / "filled.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    imported = run("eval", "ab-import", tmp_path / "ab" / "filled.csv", "--key", tmp_path / "ab" / "ab_key.json", "--json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout.strip().splitlines()[-1])["wins_a"] == 0
