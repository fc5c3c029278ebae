"""The jobs API as OpenAI's current one has it, driven by the official openai client against the real server:
metadata (and the list filtered by it), a W&B integration, validation loss in the step events, the per-step
metrics CSV in result_files, and pause / resume from the checkpoint the pause wrote."""

from __future__ import annotations

import csv
import io
import json
import re
import time

import openai
import pytest

from tests.jobs.test_jobs_api import client, serve, setup, wait_for  # noqa: F401 (setup is a fixture)
from tuneloop.jobs.store import JobStore
from tuneloop.layout import JobDir


def test_metadata_integrations_validation_events_and_the_result_file(setup):  # noqa: F811
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(
            model=setup["model"], training_file=uploaded.id, hyperparameters={"n_epochs": 2, "batch_size": 8},
            metadata={"team": "support", "ticket": "T-1"},
            integrations=[{"type": "wandb", "wandb": {"project": "triage", "name": "first", "tags": ["parity"]}}])
        other = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, hyperparameters={"n_epochs": 1})
        api.fine_tuning.jobs.cancel(other.id)
        assert job.metadata == {"team": "support", "ticket": "T-1"} and job.integrations[0].wandb.project == "triage"
        assert [j.id for j in api.fine_tuning.jobs.list(metadata={"team": "support"}).data] == [job.id]
        assert api.fine_tuning.jobs.list(metadata={"team": "sales"}).data == []
        assert [j.id for j in api.fine_tuning.jobs.list(extra_query={"metadata": "null"}).data] == [other.id]

        done = wait_for(api, job.id, {"succeeded", "failed", "cancelled"})
        assert done.status == "succeeded", done.error
        steps = sorted((e.data for e in api.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"),
                       key=lambda d: d["step"])
        assert [d["step"] for d in steps] == list(range(1, 7))
        assert sum(d["valid_loss"] is not None for d in steps) == 6  # validation at every step of this short run

        [result] = done.result_files
        meta = api.files.retrieve(result)
        assert meta.purpose == "fine-tune-results" and meta.filename == "step_metrics.csv"
        table = list(csv.DictReader(io.StringIO(api.files.content(result).text)))
        assert [int(r["step"]) for r in table] == list(range(1, 7)) and all(float(r["valid_loss"]) > 0 for r in table)
        assert [f.id for f in api.files.list(purpose="fine-tune-results").data] == [result]
    train = JobDir(JobStore(setup["url"]).run_dir(job.id)).train
    ids = json.loads(train.trackers.read_text())
    assert ids["wandb_settings"]["project"] == "triage" and ids["wandb_settings"]["mode"] == "offline"
    assert list(train.wandb.glob(f"offline-run-*-{ids['wandb']}/run-{ids['wandb']}.wandb"))


@pytest.mark.parametrize("metadata", [{f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}])
def test_metadata_beyond_openais_bounds_is_refused(setup, metadata):  # noqa: F811
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError, match="at most 16 pairs"):
            api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, metadata=metadata)


def test_pause_checkpoints_and_resume_continues_from_there(setup):  # noqa: F811
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, hyperparameters={"n_epochs": 100})
        with pytest.raises(openai.BadRequestError, match="only paused jobs can be resumed"):
            api.fine_tuning.jobs.resume(job.id)
        wait_for(api, job.id, {"running"})
        while not any(e.type == "metrics" for e in api.fine_tuning.jobs.list_events(job.id, limit=50).data):
            time.sleep(0.2)
        assert api.fine_tuning.jobs.pause(job.id).status in {"pausing", "paused"}
        wait_for(api, job.id, {"paused"}, timeout=120)
        latest = api.fine_tuning.jobs.list_events(job.id, limit=1).data[0].message
        paused_at = int(re.match(r"The job is paused at step (\d+);", latest)[1])
        assert (JobDir(JobStore(setup["url"]).run_dir(job.id)).train.checkpoints.complete()[-1].step == paused_at)
        reported = max(e.data["step"] for e in api.fine_tuning.jobs.list_events(job.id, limit=500).data if e.type == "metrics")
        assert reported == paused_at  # it stopped right after the step it checkpointed
        time.sleep(1.0)
        assert api.fine_tuning.jobs.retrieve(job.id).status == "paused"  # nothing trains while paused

        assert api.fine_tuning.jobs.resume(job.id).status == "queued"
        deadline = time.time() + 120
        while max(e.data["step"] for e in api.fine_tuning.jobs.list_events(job.id, limit=20).data if e.type == "metrics") <= paused_at + 2:
            assert time.time() < deadline, "the resumed job made no progress"
            time.sleep(0.3)
        api.fine_tuning.jobs.cancel(job.id)
        wait_for(api, job.id, {"cancelled"})
        time.sleep(1.5)
    train = JobDir(JobStore(setup["url"]).run_dir(job.id)).train
    steps = [json.loads(line)["step"] for line in train.metrics.read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) > paused_at + 2  # resumed exactly where it paused
    assert "resuming from its last checkpoint" in " ".join(e["message"] for e in JobStore(setup["url"]).events(job.id, limit=500)[0])
