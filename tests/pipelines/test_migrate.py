"""The round trip off a hosted fine-tune, with a real `tuneloop serve` on 127.0.0.1 playing the provider: a job
trains there; `tuneloop import` pulls its data and hyperparameters and records its model's answers on the test
split; `tuneloop run` on the written config retrains the open model and gates it on parity with the golden
answers; `tuneloop serve --alias` answers under the old model name."""

from __future__ import annotations

import json
import time

import openai
import pytest
import yaml

from tests.conftest import running, ticket_rows, write_jsonl
from tuneloop.config import load_config
from tuneloop.errors import TuneloopError
from tuneloop.layout import ImportDir, PipelineDir
from tuneloop.pipelines.migrate import import_hosted
from tuneloop.pipelines.run import run_pipeline
from tuneloop.server import ServeOptions, build_app


def finished_job(provider, tiny_model_dir, tmp_path):
    rows = ticket_rows(40)
    for row in rows:  # short label answers: the parity gate is then exact_match
        row["messages"][1]["content"] = json.loads(row["messages"][1]["content"])["category"]
    write_jsonl(tmp_path / "train.jsonl", rows[:36])
    write_jsonl(tmp_path / "validation.jsonl", rows[36:])
    api = openai.OpenAI(base_url=f"{provider.url}/v1", api_key="none", max_retries=0)
    train = api.files.create(file=(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune")
    val = api.files.create(file=(tmp_path / "validation.jsonl").open("rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=train.id, validation_file=val.id, suffix="triage",
                                      seed=7, method={"type": "supervised", "supervised": {"hyperparameters": {
                                          "n_epochs": 2, "batch_size": 6, "learning_rate_multiplier": 2}}})
    deadline = time.time() + 240
    while (job := api.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.time() < deadline
        time.sleep(0.3)
    assert job.status == "succeeded", job.error
    return job


def test_import_a_hosted_job_retrain_locally_gate_on_parity_and_serve_under_the_old_name(provider, tiny_model_dir, tmp_path):
    job = finished_job(provider, tiny_model_dir, tmp_path)
    out = tmp_path / "migrated"
    with pytest.raises(TuneloopError, match="no fine-tuning job made the model 'ft:nope'"):
        import_hosted(f"{provider.url}/v1", out, model="ft:nope", base=str(tiny_model_dir))
    provider.fail(2, only="/v1/chat")  # the golden answers meet two 429s: retried
    record = import_hosted(f"{provider.url}/v1", out, model=job.fine_tuned_model, base=str(tiny_model_dir))
    folder = ImportDir(out)
    assert record["job"] == job.id and record["hyperparameters"] == {"n_epochs": 2, "batch_size": 6, "learning_rate_multiplier": 2}
    assert folder.source("train").read_bytes() == (tmp_path / "train.jsonl").read_bytes()
    assert folder.source("validation").read_bytes() == (tmp_path / "validation.jsonl").read_bytes()
    golden = [json.loads(line) for line in folder.golden.read_text().splitlines()]
    tests = folder.data.test.read_text().splitlines()
    assert [json.loads(t) for t in tests] == [json.loads(v) for v in (tmp_path / "validation.jsonl").read_text().splitlines()]
    assert len(golden) == len(tests) == record["golden"] > 0 and record["golden_requests"] == len(golden)
    config = yaml.safe_load(folder.config.read_text())
    assert config["train"] == {"epochs": 2, "batch_size": 6, "learning_rate": 0.002, "seed": 7}
    assert config["objective"]["gates"] == {"exact_match: finetuned - hosted": ">= -0.05"}
    assert config["eval"]["systems"][-1] == {"name": "hosted", "answers": "golden.jsonl"}

    again = import_hosted(f"{provider.url}/v1", out, job_id=job.id, base=str(tiny_model_dir))
    assert again["golden_requests"] == 0  # every answer came from the cache

    registry = f"sqlite:///{tmp_path / 'local.db'}"
    cfg = load_config(folder.config, {"eval.regression": False, "eval.max_new_tokens": 6, "eval.bootstrap": 100, "registry.url": registry})
    result = run_pipeline(cfg, tmp_path / "run")
    [gate] = result["gates"]
    assert gate["metric"] == "exact_match: finetuned - hosted" and set(result["systems"]) == {"base", "finetuned", "hosted"}
    assert gate["value"] == pytest.approx(result["systems"]["finetuned"]["exact_match"] - result["systems"]["hosted"]["exact_match"])
    page = (PipelineDir(tmp_path / "run").eval.report_html).read_text()
    assert "exact_match: finetuned - hosted" in page and "answers recorded in" in page

    app, _ = build_app(ServeOptions(registry=registry, request_log="off", jobs=False, dashboard=False, models=[result["model"]],
                                    aliases={job.fine_tuned_model: result["model"]}))
    with running(app) as url:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        answer = api.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "Ticket: refund?"}], max_tokens=3)
        assert answer.model == job.fine_tuned_model and answer.choices[0].finish_reason in ("stop", "length")
        assert job.fine_tuned_model in {m.id for m in api.models.list()}


def test_importing_an_unfinished_job_says_why(provider, tiny_model_dir, tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ticket_rows(24))
    api = openai.OpenAI(base_url=f"{provider.url}/v1", api_key="none", max_retries=0)
    uploaded = api.files.create(file=(tmp_path / "train.jsonl").open("rb"), purpose="fine-tune")
    job = api.fine_tuning.jobs.create(model=str(tiny_model_dir), training_file=uploaded.id, hyperparameters={"n_epochs": 50})
    api.fine_tuning.jobs.cancel(job.id)
    with pytest.raises(TuneloopError, match=f"job {job.id} is cancelled: only a finished job"):
        import_hosted(f"{provider.url}/v1", tmp_path / "out", job_id=job.id)


def test_label_fields_are_read_off_json_answers():
    from tuneloop.pipelines.migrate import label_fields

    answers = [json.loads(r["messages"][1]["content"]) for r in ticket_rows(40)]
    for i, answer in enumerate(answers):
        answer["summary"] = f"ticket {i}"  # free text: never a label
    assert label_fields([json.dumps(a) for a in answers]) == ["category", "priority"]  # product is always null
    assert label_fields(["billing", "shipping"] * 20) == [] and label_fields([]) == []
