"""The fine-tuning jobs API end to end with the official openai client against the real server on
127.0.0.1: upload, create, follow events, checkpoints, then chat with the result; cancel; a file that
fails validation; jobs that survive a restart."""

from __future__ import annotations

import time

import openai
import pytest

from tests.conftest import running, ticket_rows, write_jsonl
from tuneloop.jobs.store import JobStore
from tuneloop.registry.store import Registry
from tuneloop.server import ServeOptions, build_app

HP = {"n_epochs": 1, "batch_size": 8}


@pytest.fixture
def setup(tiny_model_dir, tmp_path):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    write_jsonl(tmp_path / "train.jsonl", ticket_rows(24))
    return {"url": url, "model": str(tiny_model_dir), "train": tmp_path / "train.jsonl", "tmp": tmp_path}


def serve(setup):
    app, _ = build_app(ServeOptions(base=setup["model"], registry=setup["url"], request_log="off"))
    return running(app)


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)


def wait_for(api: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = 180):
    deadline = time.time() + timeout
    while (job := api.fine_tuning.jobs.retrieve(job_id)).status not in statuses:
        assert time.time() < deadline, f"job still {job.status}"
        time.sleep(0.3)
    return job


def test_upload_train_follow_and_chat_with_the_result(setup):
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        assert uploaded.status == "processed" and uploaded.bytes == setup["train"].stat().st_size
        assert [f.id for f in api.files.list().data] == [uploaded.id]

        job = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, hyperparameters=HP,
                                          suffix="triage", seed=3)
        assert job.status in {"queued", "running"} and job.hyperparameters.n_epochs == 1
        done = wait_for(api, job.id, {"succeeded", "failed", "cancelled"})
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:{setup['model']}:triage:{job.id}" and done.trained_tokens > 0

        events = api.fine_tuning.jobs.list_events(job.id, limit=100).data
        messages = [e.message for e in events]
        assert "The job has successfully completed" in messages[0]  # newest first
        assert any(e.type == "metrics" and e.data["step"] == 3 for e in events)
        checkpoints = api.fine_tuning.jobs.checkpoints.list(job.id).data
        assert [c.step_number for c in checkpoints] == [3] and checkpoints[0].metrics.train_loss > 0

        for model in (done.fine_tuned_model, checkpoints[0].fine_tuned_model_checkpoint):
            answer = api.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
            assert answer.choices[0].finish_reason in {"stop", "length"}
        assert done.fine_tuned_model in {m.id for m in api.models.list()}
        assert [j.id for j in api.fine_tuning.jobs.list().data] == [job.id]
        assert Registry(setup["url"]).resolve(f"ft-triage-{job.id.removeprefix('ftjob-')[:8]}")["note"].endswith(job.id)


def test_cancel_a_running_job(setup):
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, hyperparameters={"n_epochs": 100})
        wait_for(api, job.id, {"running"})
        while not any(e.type == "metrics" for e in api.fine_tuning.jobs.list_events(job.id, limit=50).data):
            time.sleep(0.3)  # training is under way
        assert api.fine_tuning.jobs.cancel(job.id).status == "cancelled"
        time.sleep(2)
        assert "The job was cancelled" in [e.message for e in api.fine_tuning.jobs.list_events(job.id).data]
        assert api.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
        with pytest.raises(openai.BadRequestError, match="already cancelled"):
            api.fine_tuning.jobs.cancel(job.id)


def test_a_file_that_fails_validation_fails_its_job_with_the_report(setup):
    bad = setup["tmp"] / "bad.jsonl"
    bad.write_text(setup["train"].read_text().splitlines()[0] + "\n{broken json\n" + '{"messages": "not a list"}\n')
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=bad.open("rb"), purpose="fine-tune")
        assert uploaded.status == "error" and "line 2" in uploaded.status_details and "line 3" in uploaded.status_details
        job = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id)
        assert job.status == "failed" and job.error.param == "training_file" and "line 2" in job.error.message
        with pytest.raises(openai.BadRequestError, match="no file 'file-nope'"):
            api.fine_tuning.jobs.create(model=setup["model"], training_file="file-nope")
        with pytest.raises(openai.BadRequestError, match="n_epochs"):
            api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, hyperparameters={"n_epochs": 0})


def test_jobs_survive_a_restart(setup):
    # Queued while no server runs, and one left "running" by a worker that died.
    store = JobStore(setup["url"])
    file_id = store.add_file(store.stage_file(setup["train"].read_bytes(), "fine-tune"), "train.jsonl", "fine-tune", "processed", None)["id"]
    fields = dict(model=setup["model"], training_file=file_id, validation_file=None, suffix=None, seed=0,
                  hyperparameters={**HP, "learning_rate_multiplier": 1.0}, method={"type": "supervised"})
    queued, orphan = store.create_job(**fields), store.create_job(**fields)
    store.set_status(queued["id"], "queued")
    store.set_status(orphan["id"], "running", worker="gone-host:1:dead")
    with serve(setup) as url:
        api = client(url)
        for job_id in (queued["id"], orphan["id"]):
            assert wait_for(api, job_id, {"succeeded", "failed"}).status == "succeeded"
        assert any("restarted" in e.message for e in api.fine_tuning.jobs.list_events(orphan["id"], limit=50).data)


def test_a_launcher_runs_the_job_data_parallel(setup):
    """The scale-out path: the worker hands training to a launcher (here torchrun with 2 CPU processes,
    gloo; `accelerate launch --num_processes N` on a multi-GPU machine)."""
    import json
    import sys

    app, _ = build_app(ServeOptions(base=setup["model"], registry=setup["url"], request_log="off",
                                    launcher=f"{sys.executable} -m torch.distributed.run --nproc_per_node 2"))
    with running(app) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, hyperparameters=HP)
        assert wait_for(api, job.id, {"succeeded", "failed"}).status == "succeeded"
    run_dir = JobStore(setup["url"]).run_dir(job.id)
    assert json.loads((run_dir / "train" / "manifest.json").read_text())["summary"]["world_size"] == 2


def test_a_job_running_when_the_server_stops_resumes_from_its_checkpoint(setup):
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, hyperparameters={"n_epochs": 12})
        deadline = time.time() + 120
        while not api.fine_tuning.jobs.checkpoints.list(job.id).data:
            assert time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
    assert JobStore(setup["url"]).job(job.id)["status"] == "running"  # left for the next start
    with serve(setup) as url:
        api = client(url)
        assert wait_for(api, job.id, {"succeeded", "failed"}).status == "succeeded"
        messages = [e.message for e in api.fine_tuning.jobs.list_events(job.id, limit=200).data]
    assert any("resuming from its last checkpoint" in m for m in messages)
    assert any("shutting down" in m for m in messages)


GRADER = {"type": "string_check", "name": "json", "operation": "like", "input": "{{sample.output_text}}", "reference": "{"}


def test_a_reinforcement_job_trains_with_its_grader_and_reports_the_reward(setup):
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        method = {"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "compute_multiplier": 0.25, "eval_interval": 2, "eval_samples": 4}}}
        job = api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id, method=method, suffix="rl")
        assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == "string_check"
        done = wait_for(api, job.id, {"succeeded", "failed", "cancelled"})
        assert done.status == "succeeded", done.error
        metrics = [e.data for e in api.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
        assert metrics and all(0.0 <= m["train_reward_mean"] <= 1.0 for m in metrics)
        assert any("valid_reward_mean" in m for m in metrics)
        checkpoints = api.fine_tuning.jobs.checkpoints.list(job.id).data
        assert checkpoints and "train_reward_mean" in checkpoints[0].metrics.model_dump()


@pytest.mark.parametrize("grader, message", [
    ({"type": "python", "source": "def grade(sample, item):\n    return 1.0"}, "TUNELOOP_ALLOW_PYTHON_GRADERS"),
    ({"type": "nope"}, "unknown grader type 'nope'"),
    (None, "grader is required"),
])
def test_a_reinforcement_job_with_a_bad_grader_is_refused(setup, grader, message):
    with serve(setup) as url:
        api = client(url)
        uploaded = api.files.create(file=setup["train"].open("rb"), purpose="fine-tune")
        section = {"grader": grader} if grader else {}
        with pytest.raises(openai.BadRequestError, match=message):
            api.fine_tuning.jobs.create(model=setup["model"], training_file=uploaded.id,
                                        method={"type": "reinforcement", "reinforcement": section})
