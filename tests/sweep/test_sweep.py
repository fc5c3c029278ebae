"""`tuneloop sweep` on the tiny model: Optuna trials that are ordinary train runs, pruning on the validation curve,
a study that survives kill -9 and continues with --resume at the interrupted trial, and config errors that name
the YAML path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import TINY_PIPELINE, ticket_rows, write_jsonl
from tuneloop.errors import TuneloopError
from tuneloop.layout import SweepDir

TUNELOOP = str(Path(sys.executable).with_name("tuneloop"))
# Two learning rates a grid tries in turn (seed 1 puts the working one first): 1e-7 barely moves the random model, so
# its validation loss stays above the first trial's at the same step and the median pruner stops it.
SWEEP = {"space": {"train.learning_rate": [0.01, 1.0e-7], "train.lora.r": [4]}, "sampler": "grid", "trials": 2,
         "startup_trials": 1, "warmup_evaluations": 1, "seed": 1}


@pytest.fixture
def prepared(tmp_path, tiny_model_dir, monkeypatch):
    """A sweep config on the tiny model (evaluating every 2 of 8 steps) and its prepared data."""
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))
    write_jsonl(tmp_path / "data.jsonl", ticket_rows(60))
    raw = yaml.safe_load(TINY_PIPELINE.format(model=tiny_model_dir))
    raw["train"].update({"max_steps": 8, "eval_every": 2, "save_every": 2})
    raw["sweep"] = SWEEP
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(raw))
    from tuneloop.config import load_config
    from tuneloop.data.prepare import prepare

    cfg = load_config(config)
    prepare(cfg.data.inputs, tmp_path / "data", cfg.data, cfg.task, cfg.model)
    return config, tmp_path / "data", raw


def test_a_sweep_runs_trials_as_train_runs_and_prunes_the_bad_one(prepared, tmp_path):
    from tuneloop.sweep.run import run_sweep

    config, data, _ = prepared
    summary = run_sweep(config, data, tmp_path / "sweep", register=True)
    states = {r["params"]["train.learning_rate"]: r["state"] for r in summary["trials"]}
    assert states == {0.01: "complete", 1.0e-7: "pruned"}, summary["trials"]
    assert summary["best"]["params"]["train.learning_rate"] == 0.01 and summary["objective"] == "val_loss"
    folders = SweepDir(tmp_path / "sweep")
    best = json.loads((folders.trial(summary["best"]["trial"]).root / "manifest.json").read_text())
    assert best["sweep"] == {"study": "tiny-sweep", "trial": summary["best"]["trial"], "params": summary["best"]["params"]}
    assert best["config"]["learning_rate"] == 0.01  # the trial's own settings, not the YAML's
    assert summary["best"]["objective"] == pytest.approx(best["summary"]["best_selection"])
    pruned = next(r for r in summary["trials"] if r["state"] == "pruned")
    assert pruned["last_step"] < 8 and not (Path(pruned["folder"]) / "manifest.json").exists()  # stopped early
    # --register: the best trial, evaluated on the test split, is a registry version with that evaluation
    from tuneloop.registry.store import Registry

    version = Registry().get(summary["registered"]["ref"])
    assert Path(version["artifact_path"]).resolve() == folders.trial(summary["best"]["trial"]).root.resolve()
    assert (folders.eval.root / "manifest.json").is_file() and version["eval_results"]["systems"]["finetuned"]
    written = json.loads(folders.summary.read_text())
    assert written["best"]["trial"] == summary["best"]["trial"] and folders.table.is_file()
    assert folders.parallel_png.is_file() or len([r for r in written["trials"] if r["state"] == "complete"]) < 2
    # the study is in the database: the same config again is refused, --resume has nothing left to run
    with pytest.raises(TuneloopError, match="already exists.*--resume"):
        run_sweep(config, data, tmp_path / "sweep")
    again = run_sweep(config, data, tmp_path / "sweep", resume=True)
    assert len(again["trials"]) == 2


def test_a_killed_sweep_resumes_at_the_interrupted_trial(prepared, tmp_path):
    config, data, raw = prepared
    raw["sweep"] = {**SWEEP, "space": {"train.learning_rate": [0.01, 0.003, 0.001]}, "trials": 3, "pruner": "none"}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "sweep"
    folders = SweepDir(out)
    command = [TUNELOOP, "sweep", str(config), "--data", str(data), "--out", str(out)]
    env = {**os.environ, "TUNELOOP_HOME": str(tmp_path / "home"), "TUNELOOP_PROGRESS_SECONDS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    # kill -9 once the second trial (number 1) has checkpointed
    while not any(folders.trial(1).checkpoints.complete()):
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before its second trial checkpointed"
        time.sleep(0.2)
    first = (folders.trial(0).root / "manifest.json").stat().st_mtime_ns
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = subprocess.run([*command, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    by_number = {r["trial"]: r for r in summary["trials"]}
    assert by_number[1]["state"] == "fail"  # the interrupted attempt, kept in the record
    retry = next(r for r in summary["trials"] if r["retry_of"] == 1)
    assert retry["state"] == "complete" and retry["params"] == by_number[1]["params"] and retry["folder"] == by_number[1]["folder"]
    assert sorted(r["params"]["train.learning_rate"] for r in summary["trials"] if r["state"] == "complete") == [0.001, 0.003, 0.01]
    assert (folders.trial(0).root / "manifest.json").stat().st_mtime_ns == first  # trial 0 was not redone
    assert "resuming from" in done.stdout + done.stderr  # the retry continued from the killed attempt's checkpoint


def test_the_first_trial_runs_the_configs_own_settings(prepared, tmp_path):
    from tuneloop.sweep.run import run_sweep
    from tuneloop.sweep.space import defaults

    config, data, raw = prepared
    raw["sweep"] = {"space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}, "train.lora.r": [2, 4, 8]},
                    "sampler": "random", "trials": 2, "pruner": "none"}
    config.write_text(yaml.safe_dump(raw))
    summary = run_sweep(config, data, tmp_path / "sweep")
    first = summary["trials"][0]
    assert first["default"] and first["params"] == {"train.learning_rate": 1e-3, "train.lora.r": 4}  # the YAML's own
    assert not summary["trials"][1]["default"]
    space = {"train.lora.r": [8, 16]}
    assert defaults({"lora": {"r": 4}}, space) is None  # outside the space: no trial can run it as it is


@pytest.mark.parametrize("sweep, message", [
    ({"space": {"train.lerning_rate": {"low": 1e-4, "high": 1e-2}}}, r"sweep\.space: train\.lerning_rate: .*did you mean 'train\.learning_rate'"),
    ({"space": {"train.learning_rate": {"low": 1e-2, "high": 1e-4}}}, r"sweep\.space\.train\.learning_rate: low .* must be below high"),
    ({"space": {"data.seed": [1, 2]}}, r"sweep\.space: data\.seed: only train\.\* settings"),
    ({"space": {"train.scheduler": {"low": 1, "high": 2}}}, r"sweep\.space: train\.scheduler: a range needs a numeric setting"),
    ({"space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2}}, "sampler": "grid"}, r"sweep: .*grid needs a list or a range with step"),
    ({"space": {"train.learning_rate": [1e-3]}, "sampler": "annealing"}, r"sweep\.sampler: "),
])
def test_a_bad_search_space_is_a_config_error_naming_the_yaml_path(sweep, message):
    from tuneloop.config import parse_config

    with pytest.raises(TuneloopError, match=message):
        parse_config({"sweep": sweep})


def test_an_objective_the_task_does_not_measure_is_refused_before_any_trial(prepared, tmp_path):
    from tuneloop.sweep.run import run_sweep

    config, data, raw = prepared
    for objective, message in (("category.f1_macr", r"sweep\.objective: 'category\.f1_macr' is not a metric of this task \(val_loss, or one of: .*category\.f1_macro"),
                               (None, r"sweep\.pruner: median reads each trial's validation curve: set train\.eval_every")):
        raw["sweep"] = {**SWEEP, "objective": objective}
        raw["train"]["eval_every"] = 2 if objective else 0
        config.write_text(yaml.safe_dump(raw))
        with pytest.raises(TuneloopError, match=message):
            run_sweep(config, data, tmp_path / "sweep")
    assert not (tmp_path / "sweep" / "trials").exists()


def test_parallel_processes_share_one_study(prepared, tmp_path):
    config, data, raw = prepared
    raw["sweep"] = {**SWEEP, "space": {"train.learning_rate": [0.01, 0.003, 0.001, 0.0003]}, "trials": 4, "pruner": "none"}
    config.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "TUNELOOP_HOME": str(tmp_path / "home")}
    done = subprocess.run([TUNELOOP, "sweep", str(config), "--data", str(data), "--out", str(tmp_path / "sweep"), "--parallel", "2", "--json"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    # Optuna's workers ask for trials independently: the grid is covered, and a point may run twice (its grid
    # sampler says so for distributed runs) when two workers start at once
    assert {r["params"]["train.learning_rate"] for r in summary["trials"]} == {0.0003, 0.001, 0.003, 0.01}
    assert all(r["state"] == "complete" for r in summary["trials"]) and 4 <= len(summary["trials"]) <= 5
