"""Jobs never run twice: the server killed with -9 while a job trains, then restarted, finishes the job exactly
once, with one trainer at a time in its run folder and each step once in its metrics. Also: an orphaned
trainer is stopped before a job resumes, and a run folder takes one trainer at a time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import free_port, ticket_rows, write_jsonl
from tuneloop.errors import TuneloopError
from tuneloop.jobs.store import JobStore
from tuneloop.jobs.worker import Worker


def trainers(run_dir: Path) -> list[int]:
    """Processes training into `run_dir` right now (any rank, any launcher)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train" in argv and str(run_dir).encode() in b" ".join(argv) and (proc / "stat").read_text().split()[2] != "Z":
            found.append(int(proc.name))
    return found


def start_server(model: str, url: str, home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "TUNELOOP_HOME": str(home), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "tuneloop.cli", "serve", "--base", model, "--registry", url, "--port", str(port),
               "--request-log", "off"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while True:
        assert process.poll() is None, process.stderr.read().decode()[-3000:]
        assert time.time() < deadline, "the server did not start"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)


def test_kill_9_mid_job_then_restart_finishes_the_job_exactly_once(tiny_model_dir, tmp_path):
    url, home = f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "home"
    write_jsonl(tmp_path / "train.jsonl", ticket_rows(48))
    port = free_port()
    server = start_server(str(tiny_model_dir), url, home, port)
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=2)
    uploaded = api.files.create(file=(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id,
                                      hyperparameters={"n_epochs": 8, "batch_size": 4})
    run_dir = JobStore(url, root=home).run_dir(job.id)

    most, watching = [0], threading.Event()

    def watch():  # the most trainers ever seen at once in this job's folder, from the kill to the end
        while not watching.is_set():
            most[0] = max(most[0], len(trainers(run_dir)))
            time.sleep(0.05)

    deadline = time.time() + 300
    while not api.fine_tuning.jobs.checkpoints.list(job.id).data:
        assert time.time() < deadline and server.poll() is None, "no checkpoint appeared"
        time.sleep(0.2)
    first_trainer = trainers(run_dir)
    assert len(first_trainer) == 1
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    server.send_signal(signal.SIGKILL)
    server.wait(30)

    server = start_server(str(tiny_model_dir), url, home, port)
    try:
        while (status := api.fine_tuning.jobs.retrieve(job.id).status) not in ("succeeded", "failed", "cancelled"):
            assert time.time() < deadline + 300, f"job still {status}"
            time.sleep(0.5)
        assert status == "succeeded", api.fine_tuning.jobs.retrieve(job.id).error
        events = api.fine_tuning.jobs.list_events(job.id, limit=1000).data
        checkpoints = [c.step_number for c in api.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data]
    finally:
        watching.set()
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    watcher.join(5)
    assert most[0] == 1, f"{most[0]} trainers wrote {run_dir} at once"
    assert not any(pid in first_trainer for pid in trainers(run_dir))  # the first one is gone
    steps = [json.loads(line)["step"] for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    rows = len((run_dir / "data" / "train.jsonl").read_text().splitlines())
    assert steps == list(range(1, -(-rows // 4) * 8 + 1))
    metric_steps = [e.data["step"] for e in events if e.type == "metrics"]
    assert sorted(metric_steps) == sorted(set(metric_steps)) == list(range(1, len(steps) + 1))  # each step reported once
    messages = [e.message for e in events]
    assert sum("successfully completed" in m for m in messages) == 1 and any("resuming" in m for m in messages)
    assert len(checkpoints) == len(set(checkpoints))


def test_an_orphaned_trainer_is_stopped_before_the_job_is_queued_again(tmp_path):
    store = JobStore(f"sqlite:///{tmp_path / 'r.db'}", root=tmp_path)
    staged = store.stage_file(b"{}\n", "fine-tune")
    file_id = store.add_file(staged, "t.jsonl", "fine-tune", "processed", None)["id"]
    job = store.create_job(model="m", training_file=file_id, validation_file=None, suffix=None, seed=0,
                           hyperparameters={"n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": 1.0}, method={"type": "supervised"})
    # A "trainer" that ignores its worker's death (it does not watch it), in its own process group.
    stubborn = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.set_status(job["id"], "running", worker=f"{socket.gethostname()}:{dead.pid}:1", trainer_pid=stubborn.pid)

    class NoStages:  # the worker must not get as far as preparing data: the queue stays empty
        pass

    worker = Worker(store, NoStages())
    worker.start()
    try:
        assert stubborn.wait(30) is not None  # stopped before the job went back to the queue
        assert store.job(job["id"])["status"] in ("queued", "running", "failed")
        assert any("Stopping the earlier trainer" in e["message"] for e in store.events(job["id"], limit=50)[0])
    finally:
        worker.stop()
        if stubborn.poll() is None:
            stubborn.kill()


def test_a_run_folder_takes_one_trainer_at_a_time(tmp_path, tiny_model_dir):
    from tuneloop.artifacts import exclusive
    from tuneloop.config import LoraConfig, ModelConfig, TrainConfig
    from tuneloop.layout import TrainDir
    from tuneloop.train.trainer import train

    write_jsonl(tmp_path / "train.jsonl", ticket_rows(16))
    cfg = TrainConfig(max_steps=2, batch_size=8, lora=LoraConfig(r=4))
    holder = subprocess.Popen([sys.executable, "-c", f"""
from pathlib import Path
import time
from tuneloop.artifacts import exclusive
with exclusive(Path({str(TrainDir(tmp_path / 'run').lock)!r}), "x"):
    print("held", flush=True)
    time.sleep(3)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(TuneloopError, match=r"already being written by process \d+"):
        train(cfg, ModelConfig(name=str(tiny_model_dir)), tmp_path, tmp_path / "run")
    assert train(cfg, ModelConfig(name=str(tiny_model_dir)), tmp_path, tmp_path / "run", wait_for_lock=60)["steps"] == 2
    holder.wait(30)
    with exclusive(TrainDir(tmp_path / "run").lock, "x"):  # released by the trainer when it finished
        pass
