"""`train.backend: openai-compatible`: the same config trained by a provider's fine-tuning API.

Reads top to bottom: the prepared splits written in the provider's form (messages, and tools where a row has
them) and uploaded -> the job created with the config's hyperparameters (epochs, batch size, learning rate as a
multiplier of the provider's default, seed, suffix, metadata naming the run) -> its events followed with
progress, each metrics event a line of metrics.jsonl -> the result files (per-step metrics CSV) downloaded
-> loss.png and manifest.json. The train folder then stands for the hosted model (remote.json), which the
registry records as a version of kind remote and serving answers by proxy.

Every step is recorded in remote.json as soon as it is done (files uploaded, job created, last event read),
so a provider that goes down, or a process that is stopped, loses nothing: `--resume` follows the same job
on. A job that failed is reported with the provider's error; `--resume` then starts a new job on the files
already uploaded (the failed one stays listed under `attempts`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from pathlib import Path

from tuneloop.artifacts import manifest_task, read_jsonl, write_json, write_jsonl, write_manifest
from tuneloop.config import TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.layout import DataDir, TrainDir
from tuneloop.providers.client import Client, api_key
from tuneloop.providers.finetune import FINAL, HostedJobs, job_error
from tuneloop.train.plots import plot_losses
from tuneloop.ui import console, progress


def train_hosted(cfg: TrainConfig, data_dir: Path, out: Path, resume: bool) -> dict:
    started, hosted, run, data = time.time(), cfg.hosted, TrainDir(out), DataDir(data_dir)
    state = json.loads(run.remote.read_text()) if run.remote.is_file() else None
    if state is not None and not resume:
        raise TuneloopError(f"{out} already follows hosted job {state.get('job')} ({state.get('status')}); rerun with --resume "
                            "to follow it on, or give another --out")
    state = state or {"base_url": hosted.base_url, "api_key_env": hosted.api_key_env, "base_model": hosted.model,
                      "files": {}, "job": None, "status": None, "fine_tuned_model": None, "last_event": None, "attempts": []}
    if state["base_url"].rstrip("/") != hosted.base_url.rstrip("/"):
        raise TuneloopError(f"{out} follows a job at {state['base_url']}, not train.hosted.base_url {hosted.base_url}; give another --out")
    out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every step that must not be lost
        write_json(run.remote, state)

    with Client(hosted.base_url, key=api_key(hosted.api_key_env, "train.hosted"), timeout_s=hosted.timeout_s,
                retries=hosted.retries) as client:
        jobs = HostedJobs(client)
        # --- upload -----------------------------------------------------------------------------
        for split in ("train", "val"):
            rows = read_jsonl(data.split(split)) if split not in state["files"] and data.split(split).is_file() else []
            if not rows:
                continue
            state["files"][split] = jobs.upload(_provider_form(rows, data.split(split), run.uploaded(split)))["id"]
            console.print(f"train (hosted): uploaded {split} as {state['files'][split]}")
            save()
        # --- job --------------------------------------------------------------------------------
        if state["job"] and state["status"] in ("failed", "cancelled"):
            state["attempts"].append({"job": state["job"], "status": state["status"], "error": state.get("error")})
            state.update(job=None, status=None, last_event=None, error=None)
        if not state["job"]:
            job = jobs.create(model=hosted.model, training_file=state["files"]["train"], validation_file=state["files"].get("val"),
                              suffix=hosted.suffix or _suffix(out.name), seed=cfg.seed, metadata={"tuneloop_run": out.name[:512]},
                              method={"type": "supervised", "supervised": {"hyperparameters": _hyperparameters(cfg)}})
            state.update(job=job["id"], status=job.get("status"), base_model=hosted.model, api_key_env=hosted.api_key_env)
            console.print(f"train (hosted): created job {job['id']} on {hosted.base_url}")
            save()
        job = _follow(jobs, state, run, hosted.poll_s, save)
        if job["status"] != "succeeded":
            state["error"] = job_error(job)
            save()
            raise TuneloopError(f"hosted job {job['id']} {job['status']}: {state['error']}; the uploaded files are kept in "
                                f"{run.remote}: fix what it says and rerun with --resume to start a new job on them")
        # --- results ----------------------------------------------------------------------------
        for file_id in job.get("result_files") or []:
            target = run.result_files / f"{file_id}.csv"
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(jobs.content(file_id))
    state.update(fine_tuned_model=job["fine_tuned_model"], status="succeeded", trained_tokens=job.get("trained_tokens"))
    save()
    records = _records(run)
    plot_losses(records, run.loss_plot)
    losses = [r["train_loss"] for r in records if r.get("train_loss") is not None] or [float("nan")]
    summary = {"backend": "openai-compatible", "job": job["id"], "fine_tuned_model": job["fine_tuned_model"], "steps": len(records),
               "first_loss": losses[0], "final_loss": losses[-1], "trained_tokens": job.get("trained_tokens"),
               "val_loss": next((r["val_loss"] for r in reversed(records) if r.get("val_loss") is not None), None)}
    write_manifest(out, "train", cfg, inputs={"train": data.train}, outputs=[run.remote, run.metrics, run.loss_plot], seed=cfg.seed,
                   started=started, parent=data_dir, extra={"model": {"name": hosted.model, "provider": hosted.base_url},
                                                            "summary": summary, "task": manifest_task(data_dir)})
    console.print(f"train (hosted): {job['fine_tuned_model']} ready; {out} stands for it")
    return summary


def _follow(jobs: HostedJobs, state: dict, run: TrainDir, poll_s: float, save) -> dict:
    """Read the job's new events (metrics into metrics.jsonl) until it is final; progress from the step events."""
    records = {r["step"]: r for r in (read_jsonl(run.metrics) if run.metrics.is_file() else [])}
    with progress() as bar:
        task = bar.add_task("train (hosted)", total=None, info=state["job"])
        while True:
            job = jobs.get(state["job"])
            events = jobs.new_events(state["job"], state["last_event"])
            for event in events:
                data = event.get("data") or {}
                if event.get("type") == "metrics" and isinstance(data.get("step"), int):
                    records[data["step"]] = {"step": data["step"], **_ours(data)}
                    bar.update(task, total=data.get("total_steps"), completed=data["step"],
                               info=f"loss {data.get('train_loss') or float('nan'):.3f}")
                elif event.get("message"):
                    console.print(f"[dim]{state['job']}: {event['message']}[/]")
                state["last_event"] = event.get("id")
            if events or job.get("status") != state["status"] or not run.metrics.is_file():
                write_jsonl(run.metrics, [records[k] for k in sorted(records)])
                state["status"] = job.get("status")
                save()
            if job.get("status") in FINAL:
                return job
            time.sleep(poll_s)


def _records(run: TrainDir) -> list[dict]:
    """The per-step numbers: from the events, else from the result CSV (step, train_loss, valid_loss)."""
    records = read_jsonl(run.metrics) if run.metrics.is_file() else []
    if records or not run.result_files.is_dir():
        return records
    for path in sorted(run.result_files.glob("*.csv")):
        for row in csv.DictReader(io.StringIO(path.read_text())):
            if (row.get("step") or "").isdigit():
                records.append({"step": int(row["step"]), **{k: float(v) for k, v in _ours(row).items()}})
    write_jsonl(run.metrics, records)
    return records


def _ours(numbers: dict) -> dict:
    """A provider's step numbers (an event's data, a result CSV row) under metrics.jsonl's names; empty ones left out."""
    return {ours: numbers[theirs] for theirs, ours in (("train_loss", "train_loss"), ("valid_loss", "val_loss"))
            if numbers.get(theirs) not in (None, "")}


def _provider_form(rows: list[dict], split: Path, target: Path) -> Path:
    """The split's rows as the fine-tuning API takes them: chat rows with `messages` (and `tools`), nothing else."""
    kept = []
    for row in rows:
        if "messages" not in row:
            raise TuneloopError(f"{split}: the hosted backend trains on chat rows (messages); this split holds {sorted(row)}")
        messages = [{k: m[k] for k in ("role", "content", "tool_calls", "tool_call_id", "name", "weight") if k in m} for m in row["messages"]]
        kept.append({"messages": messages, **({"tools": row["tools"]} if row.get("tools") else {})})
    return write_jsonl(target, kept)


def _hyperparameters(cfg: TrainConfig) -> dict:
    return {"n_epochs": max(1, math.ceil(cfg.epochs)), "batch_size": cfg.batch_size,
            "learning_rate_multiplier": round(cfg.learning_rate / cfg.hosted.default_learning_rate, 6)}


def _suffix(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:64]
