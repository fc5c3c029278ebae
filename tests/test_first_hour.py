"""A new user's first hour: mistakes fail before anything heavy loads, with a suggestion; a killed run resumes
where it stopped; progress shows in a pipe; `init` scaffolds a project that runs; `doctor` says what is
there; every command's --help renders and the README's flags exist."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_PIPELINE, ticket_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[1]
TUNELOOP = str(Path(sys.executable).parent / "tuneloop")
CHECK = """
import sys
from tuneloop.cli import main
sys.argv = ["tuneloop", *{args!r}]
try:
    main()
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in ("torch", "transformers", "peft", "fastapi", "datasets") if m in sys.modules)
print("HEAVY", heavy, "CODE", code)
"""


def early_error(args: list[str], cwd: Path) -> tuple[str, list[str]]:
    """(stderr, heavy libraries imported by then): the error must come before any of them loads."""
    done = subprocess.run([sys.executable, "-c", CHECK.format(args=list(map(str, args)))], capture_output=True, text=True, cwd=cwd, timeout=120)
    heavy = re.search(r"HEAVY \[(.*?)\] CODE (\d+)", done.stdout)
    assert heavy and heavy[2] == "2", done.stdout + done.stderr
    return done.stderr, [m.strip(" '") for m in heavy[1].split(",") if m.strip()]


@pytest.mark.parametrize("yaml_text, expected", [
    ("train: {learnig_rate: 0.001}\n", "train.learnig_rate: unknown key; did you mean 'learning_rate'?"),
    ("trian: {epochs: 1}\n", "trian: unknown key; did you mean 'train'?"),
    ("data: {inputs: [tickts.jsonl]}\n", "tickts.jsonl: file not found (data.inputs); did you mean"),
    ("model: {name: smollm2-135m-instrct}\ndata: {inputs: [tickets.jsonl]}\n", "did you mean 'smollm2-135m-instruct'?"),
])
def test_mistakes_fail_before_anything_heavy_with_a_suggestion(tmp_path, yaml_text, expected):
    (tmp_path / "tickets.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (tmp_path / "p.yaml").write_text(yaml_text)
    stderr, heavy = early_error(["run", "p.yaml"], tmp_path)
    assert expected in " ".join(stderr.split()) and heavy == [], (stderr, heavy)


def test_serve_with_an_unregistered_model_fails_before_loading_anything(tmp_path):
    from tuneloop.registry.store import Registry

    url = f"sqlite:///{tmp_path / 'r.db'}"
    Registry(url).register("ticket-triage", tmp_path, "base", "lora")
    stderr, heavy = early_error(["serve", "--model", "ticket-triag", "--registry", url], tmp_path)
    assert "registry has no model 'ticket-triag'" in stderr and "did you mean 'ticket-triage'?" in stderr
    assert "torch" not in heavy and "fastapi" not in heavy


def test_a_killed_run_resumes_without_redoing_finished_work(tmp_path, tiny_model_dir):
    write_jsonl(tmp_path / "data.jsonl", ticket_rows(50))
    config = tmp_path / "pipeline.yaml"
    config.write_text(TINY_PIPELINE.format(model=tiny_model_dir).replace("max_steps: 3", "max_steps: 300, save_every: 5"))
    run_dir = tmp_path / "run"
    first = subprocess.Popen([TUNELOOP, "run", config, "--out", run_dir], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    checkpoints = run_dir / "train" / "checkpoints"
    deadline = time.time() + 300
    while not (checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir())):
        assert first.poll() is None and time.time() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.05)
    data_manifest = (run_dir / "data" / "manifest.json").read_text()
    first.send_signal(signal.SIGTERM)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and f"--resume --out {run_dir}" in " ".join(stderr.split())

    again = subprocess.run([TUNELOOP, "run", config, "--out", run_dir, "--resume", "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "data: finished earlier" in again.stderr and "resuming from" in again.stderr
    assert (run_dir / "data" / "manifest.json").read_text() == data_manifest  # not redone
    steps = [json.loads(line)["step"] for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 301))
    assert json.loads(again.stdout.strip().splitlines()[-1])["model"] == "tiny:1"


def test_progress_without_a_terminal_is_plain_lines_with_a_heartbeat(capsys):
    from tuneloop.ui import LineProgress

    with LineProgress(every=0.2, heartbeat=0.5) as bar:
        task = bar.add_task("train", total=4, info="")
        bar.update(task, advance=1, info="loss 1.0")
        time.sleep(1.6)  # a long step: the heartbeat says so
        for _ in range(3):
            bar.update(task, advance=1, info="loss 0.5")
    lines = capsys.readouterr().err.splitlines()
    assert any("train · 0/4" in line and "started" in line for line in lines)
    assert any("still working" in line for line in lines)
    assert "train · 4/4 (100%)" in lines[-1] and "loss 0.5" in lines[-1]


def test_init_scaffolds_a_project_that_prepares(tmp_path):
    made = subprocess.run([TUNELOOP, "init", tmp_path / "mine"], capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    assert "tuneloop run" in made.stderr
    prepared = subprocess.run([TUNELOOP, "data", "prepare", tmp_path / "mine" / "data" / "examples.jsonl", "--out", tmp_path / "d",
                               "--config", tmp_path / "mine" / "pipeline.yaml", "--model", "smollm2-135m-instruct", "--json"],
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr
    report = json.loads(prepared.stdout.strip().splitlines()[-1])
    assert report["kept"] >= 100 and report["splits"]["test"] >= 20
    again = subprocess.run([TUNELOOP, "init", tmp_path / "mine"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exist" in again.stderr


def test_doctor_reports_the_machine(tmp_path):
    done = subprocess.run([TUNELOOP, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    checks = {c["name"]: c for c in json.loads(done.stdout.strip().splitlines()[-1])["checks"]}
    assert {"python", "torch", "memory", "embedded model smollm2-135m-instruct", "extra [serve]"} <= checks.keys()
    assert checks["torch"]["level"] == "ok" and "threads" in checks["torch"]["detail"] or "CUDA" in checks["torch"]["detail"]


def test_every_help_renders_and_the_readmes_flags_exist():
    from typer.testing import CliRunner

    from tuneloop.cli import VERBS, app

    runner = CliRunner()
    helps = {}
    for verb, target in VERBS.items():
        names = [c.name or c.callback.__name__.replace("_", "-") for c in getattr(target, "registered_commands", [])]
        commands = [[verb]] + [[verb, name] for name in names]
        for words in commands:
            result = runner.invoke(app, [*words, "--help"], terminal_width=200)
            assert result.exit_code == 0, (words, result.output)
            helps[" ".join(words)] = result.output
    readme = (ROOT / "README.md").read_text()
    missing, checked = [], 0
    for line in readme.splitlines():
        for segment in re.split(r"(?:\.venv/bin/)?\btuneloop ", line)[1:]:
            segment = segment.split("&&")[0]
            parts = [part.split() for part in segment.split(" | ")]
            verb = parts[0][0] if parts[0] else ""
            if verb not in VERBS:
                continue
            for n, words in enumerate(parts):
                words = words if n == 0 else [verb, *words]
                key = f"{verb} {words[1]}" if len(words) > 1 and f"{verb} {words[1]}" in helps else verb
                if key == "eval":  # `tuneloop eval CONFIG ...` is `tuneloop eval run CONFIG ...`
                    key = "eval run"
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", " ".join(words)):
                    checked += 1
                    if flag not in helps[key]:
                        missing.append(f"{key} {flag}")
    assert not missing, f"README mentions flags the commands do not have: {sorted(set(missing))}"
    assert checked >= 20  # the README's command lines were really read
