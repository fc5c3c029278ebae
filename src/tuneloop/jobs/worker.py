"""The job worker: takes queued jobs from the database one at a time and runs each as a training
subprocess (`tuneloop train`, or `accelerate launch -m tuneloop.cli train` for several GPUs), outside
the request path.

While training runs, the worker turns new lines of the run's metrics.jsonl into job events and new
checkpoint folders into job checkpoints (each servable as `ft:...:ckpt-step-N`), estimates the finish
time, and stops the subprocess when the job is cancelled. On success it registers the model (lineage
back to the job) and names it `ft:BASE:SUFFIX:JOBID`. A job left `running` by a worker that died is
queued again at start-up and resumes from its last checkpoint.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from tuneloop.artifacts import read_jsonl, read_manifest
from tuneloop.config import DataConfig
from tuneloop.errors import TuneloopError
from tuneloop.jobs.spec import pipeline_for
from tuneloop.jobs.stages import Stages
from tuneloop.jobs.store import JobStore
from tuneloop.layout import JobDir, TrainDir

POLL_S = 0.5
LEASE_S = 60  # a running job whose worker has not renewed its lease for this long is taken as abandoned
LOCK_WAIT_S = 120  # how long a resumed trainer waits for an older one to let go of the run folder
PAUSE_S = 300  # how long a pausing trainer may take to finish its step and checkpoint


class Worker:
    def __init__(self, store: JobStore, stages: Stages, *, launcher: str | None = None, poll_s: float = POLL_S):
        self.store, self.stages, self.poll_s = store, stages, poll_s
        # e.g. "accelerate launch --num_processes 4": the training command is appended to it.
        self.launcher = shlex.split(launcher) if launcher else None
        self.name = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-worker", daemon=True)

    def start(self) -> Worker:
        for job in self.store.orphaned(self.name):
            if not self._abandoned(job):
                continue  # another live server is running it
            self._stop_orphaned_trainer(job)
            if job["status"] == "pausing":  # it was being paused: it is paused now, at its last checkpoint
                self.store.set_status(job["id"], "paused", only_from=("pausing",), worker=None, trainer_pid=None)
                self.store.add_event(job["id"], "The server restarted while this job paused; it is paused at its last checkpoint")
                continue
            self.store.set_status(job["id"], "queued", only_from=("running",), worker=None, trainer_pid=None)
            self.store.add_event(job["id"], "The server restarted while this job ran; it is queued again and will "
                                            "resume from its last checkpoint", level="warn")
        self._thread.start()
        return self

    def _abandoned(self, job: dict) -> bool:
        """A running job whose worker is gone: a dead process on this host, or a lease not renewed for LEASE_S."""
        host, _, rest = (job.get("worker") or "").partition(":")
        pid = rest.split(":")[0]
        if host == socket.gethostname() and pid.isdigit():
            return int(pid) == os.getpid() or not _alive(int(pid))  # or: this process restarted its worker
        renewed = job.get("heartbeat_at")
        return renewed is None or (dt.datetime.now(dt.UTC) - renewed).total_seconds() > LEASE_S

    def _stop_orphaned_trainer(self, job: dict) -> None:
        """A dead worker's trainer exits by itself (it watches its worker), but never let it train on beside the
        resumed run: stop its process group, and wait until it has."""
        pid = job.get("trainer_pid")
        if not pid or (job.get("worker") or "").partition(":")[0] != socket.gethostname() or not _alive(pid):
            return
        self.store.add_event(job["id"], f"Stopping the earlier trainer (process {pid}) before resuming", level="warn")
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                return
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _alive(pid):
                return

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim_next(self.name)
            if job is None:
                self._stop.wait(self.poll_s)
                continue
            try:
                self._run_job(job)
            except Exception as err:  # one job's failure never stops the worker
                message = str(err) if isinstance(err, TuneloopError) else f"{err.__class__.__name__}: {err}"
                self.store.set_status(job["id"], "failed", only_from=("running",), error={"code": "training_failed", "message": message, "param": None})
                self.store.add_event(job["id"], f"The job failed: {message}", level="error")

    def _run_job(self, job: dict) -> None:
        job_id, run = job["id"], JobDir(self.store.run_dir(job["id"]))
        train_dir = run.train
        train_dir.pause.unlink(missing_ok=True)  # a request of an earlier pause, now resumed
        resume = bool(train_dir.checkpoints.all())
        self.store.add_event(job_id, "Fine-tuning job started" + (" (resuming from its last checkpoint)" if resume else ""))
        config_path, rows = self._prepare(job, run)
        command = [sys.executable, "-m", "tuneloop.cli", "train", str(config_path), "--data", str(run.data.root), "--out", str(train_dir.root),
                   "--wait-for-lock", str(LOCK_WAIT_S)]
        if resume:
            command.append("--resume")
        if self.launcher:
            command = [*self.launcher, *command[1:]]  # `accelerate launch ... -m tuneloop.cli train ...`
        epoch_steps = math.ceil(rows / job["hyperparameters"]["batch_size"])
        outcome = self._supervise(job, command, train_dir, epoch_steps, epoch_steps * job["hyperparameters"]["n_epochs"], run.log)
        if outcome == "cancelled":
            self.store.add_event(job_id, "The job was cancelled")
            return
        if outcome == "paused":
            last = train_dir.checkpoints.complete()
            self.store.set_status(job_id, "paused", only_from=("pausing",))
            self.store.add_event(job_id, f"The job is paused at step {last[-1].step if last else 0}; POST "
                                         f"/v1/fine_tuning/jobs/{job_id}/resume continues from there")
            return
        if outcome == "lost":  # another worker took the job over (this one stalled past its lease): leave it to that one
            self.store.add_event(job_id, f"Worker {self.name} lost its lease on the job and stopped its trainer", level="warn")
            return
        if outcome == "stopped":  # left `running`: the next worker to start queues it again and resumes it
            self.store.add_event(job_id, "The server is shutting down; the job will resume from its last checkpoint on restart",
                                 level="warn")
            return
        if outcome != 0:
            tail = run.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise TuneloopError(f"training exited with code {outcome}: " + " | ".join(tail))
        self._finish(job, train_dir)

    def _prepare(self, job: dict, run: JobDir) -> tuple[Path, int]:
        training = Path(self.store.file(job["training_file"])["path"])
        validation = Path(self.store.file(job["validation_file"])["path"]) if job["validation_file"] else None
        cfg = pipeline_for(job, training, validation is not None)
        data = run.data
        if not data.train.is_file():
            self.stages.prepare([training], data.root, cfg.data, cfg.model)
            if validation is not None:
                self.stages.prepare([validation], run.validation.root, DataConfig(val_ratio=0, test_ratio=0), cfg.model)
                data.val.write_bytes(run.validation.train.read_bytes())
        rows = len(read_jsonl(data.train))
        steps_per_epoch = max(1, math.ceil(rows / cfg.train.batch_size))
        # Validation loss about ten times over the run (OpenAI's events carry valid_loss along the way), unless set.
        every = cfg.train.eval_every or max(1, math.ceil(steps_per_epoch * job["hyperparameters"]["n_epochs"] / 10))
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"save_every": steps_per_epoch, "eval_every": every})})
        path = run.config
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        self.store.add_event(job["id"], f"Prepared {rows} training rows" + (" and the validation file" if validation else ""))
        return path, rows

    def _supervise(self, job: dict, command: list[str], train_dir: TrainDir, epoch_steps: int, total_steps: int,
                   log_path: Path) -> int | str:
        job_id, started = job["id"], time.time()
        # What an earlier run of this job (before a restart) already reported is not reported again.
        reported = self.store.last_reported_step(job_id)
        seen_checkpoints = {c["fine_tuned_model_checkpoint"] for c in self.store.checkpoints(job_id)}
        # The trainer is tied to this process: it exits when this process is gone (TUNELOOP_WORKER_PID), so a
        # server killed with -9 leaves no trainer behind to race the resumed one.
        env = {**os.environ, "TUNELOOP_JOB_ID": job_id, "TUNELOOP_WORKER_PID": str(os.getpid())}
        with log_path.open("a") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
            owned = self.store.renew(job_id, self.name, trainer_pid=process.pid)
            while True:
                finished = process.poll() is not None
                reported = self._metrics_events(job_id, train_dir, reported, started, total_steps)
                self._new_checkpoints(job, train_dir, seen_checkpoints, epoch_steps, total_steps)
                if finished:
                    return process.returncode
                lost, status = not owned, self.store.job(job_id)["status"]
                if status == "pausing" and not lost and not self._stop.is_set():
                    self._pause(job_id, process, train_dir)
                    reported = self._metrics_events(job_id, train_dir, reported, started, total_steps)
                    self._new_checkpoints(job, train_dir, seen_checkpoints, epoch_steps, total_steps)
                    return "paused"
                if lost or status == "cancelled" or self._stop.is_set():
                    _stop_group(process)
                    return "lost" if lost else "stopped" if self._stop.is_set() else "cancelled"
                time.sleep(self.poll_s)
                owned = self.store.renew(job_id, self.name)

    def _pause(self, job_id: str, process: subprocess.Popen, train_dir: TrainDir) -> None:
        """Ask the trainer to checkpoint and stop after its current step (TrainDir.pause), holding the lease while
        it does; stop it if it has not within PAUSE_S (its last periodic checkpoint is then where the job resumes)."""
        train_dir.pause.touch()
        deadline = time.monotonic() + PAUSE_S
        while process.poll() is None and time.monotonic() < deadline:
            self.store.renew(job_id, self.name)
            time.sleep(self.poll_s)
        if process.poll() is None:
            _stop_group(process)

    def _metrics_events(self, job_id: str, train_dir: TrainDir, reported: int, started: float, total_steps: int) -> int:
        """Events for the steps past `reported` (each step once, across restarts); returns the last step reported."""
        path = train_dir.metrics
        if not path.is_file():
            return reported
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return reported  # a line being written: read it next time
            if record["step"] <= reported:
                continue
            data = {"step": record["step"], "train_loss": record.get("train_loss"), "valid_loss": record.get("val_loss"),
                    "total_steps": total_steps, **_rewards(record)}
            reward = f", reward={record['reward']:.4f}" if "reward" in record else ""
            self.store.add_event(job_id, f"Step {record['step']}/{total_steps}: training loss={record.get('train_loss', float('nan')):.4f}"
                                         f"{reward}", data=data)
            elapsed = time.time() - started
            self.store.update_job(job_id, estimated_finish=int(started + elapsed * total_steps / max(record["step"], 1)))
            reported = record["step"]
        return reported

    def _new_checkpoints(self, job: dict, train_dir: TrainDir, seen: set[str], epoch_steps: int, total_steps: int) -> None:
        """The checkpoints at the end of each epoch (and of the run) as the job's checkpoints; the trainer's others
        (a better validation loss, a pause) are where it resumes from, not listed."""
        records = {}
        for checkpoint in train_dir.checkpoints.complete():
            name = f"{_model_name(job)}:ckpt-step-{checkpoint.step}"
            if name in seen or (checkpoint.step % epoch_steps and checkpoint.step != total_steps):
                continue
            seen.add(name)
            if not records:
                records = {r["step"]: r for r in read_jsonl(train_dir.metrics)} if train_dir.metrics.is_file() else {}
            record = records.get(checkpoint.step, {})
            metrics = {"train_loss": record.get("train_loss"), "valid_loss": record.get("val_loss"), **_rewards(record)}
            self.store.add_checkpoint(job["id"], checkpoint.step, metrics, checkpoint.weights, name)

    def _finish(self, job: dict, train_dir: TrainDir) -> None:
        manifest = read_manifest(train_dir.root)
        per_epoch = manifest["summary"].get("tokens_per_epoch")
        tokens = int(per_epoch * job["hyperparameters"]["n_epochs"]) if per_epoch else None
        name = _registry_name(job)
        version = self.stages.register(name, train_dir.root, note=f"fine-tuning job {job['id']}")
        results = self.store.add_file(self.store.stage_file(_metrics_csv(train_dir), "fine-tune-results"), "step_metrics.csv",
                                      "fine-tune-results", "processed", None)
        self.store.set_status(job["id"], "succeeded", only_from=("running",), fine_tuned_model=_model_name(job),
                              registry_ref=version["ref"], trained_tokens=tokens, result_files=[results["id"]])
        self.store.add_event(job["id"], f"New fine-tuned model created: {_model_name(job)} (registry {version['ref']})")
        self.store.add_event(job["id"], "The job has successfully completed")


def _metrics_csv(train_dir: TrainDir) -> bytes:
    """The per-step metrics as OpenAI's result file has them (step, train_loss, valid_loss, ...; empty cells
    where a step has no value), in tuneloop's numbers."""
    records = read_jsonl(train_dir.metrics) if train_dir.metrics.is_file() else []
    columns = {"step": "step", "train_loss": "train_loss", "valid_loss": "val_loss", "train_reward_mean": "reward",
               "valid_reward_mean": "val_reward", "tokens_per_s": "tokens_per_s"}
    used = [name for name, key in columns.items() if name == "step" or any(key in r for r in records)]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(used)
    for record in records:
        writer.writerow([record.get(columns[name], "") for name in used])
    return out.getvalue().encode()


def _rewards(record: dict) -> dict:
    """A GRPO step's rewards under OpenAI's reinforcement metric names (nothing for SFT and DPO)."""
    names = {"reward": "train_reward_mean", "val_reward": "valid_reward_mean", "kl": "kl"}
    return {name: record[key] for key, name in names.items() if key in record}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that id
        return True
    return True


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the trainer's process group (all ranks of a launcher), SIGKILL it if it does not stop in time."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
    except ProcessLookupError:
        pass


def _model_name(job: dict) -> str:
    return f"ft:{job['model']}:{job['suffix'] or ''}:{job['id']}"


def _registry_name(job: dict) -> str:
    return f"ft-{job['suffix'] or 'model'}-{job['id'].removeprefix('ftjob-')[:8]}"
