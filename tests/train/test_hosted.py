"""`train.backend: openai-compatible` end to end, with a real `tuneloop serve` on 127.0.0.1 playing the hosted
provider (its files and jobs API trains the tiny model) behind a proxy that injects failures: the run
uploads, creates the job, follows it, registers a version of kind remote, is served by proxy, and is
evaluated beside a local fine-tune in one report; a provider that goes down or refuses loses nothing."""

from __future__ import annotations

import json
import threading
import time

import openai
import yaml
import pytest

from tests.conftest import running, ticket_rows, write_jsonl
from tuneloop.config import EvalConfig, LoraConfig, ModelConfig, ObjectiveConfig, TaskConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.eval.evaluate import evaluate
from tuneloop.layout import TrainDir
from tuneloop.registry.lineage import register_run
from tuneloop.registry.store import Registry
from tuneloop.server import ServeOptions, build_app
from tuneloop.train.trainer import train


@pytest.fixture
def data(tmp_path):
    rows = ticket_rows(30)
    folder = tmp_path / "data"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", rows[:20])
    write_jsonl(folder / "val.jsonl", rows[20:24])
    write_jsonl(folder / "test.jsonl", rows[24:])
    return folder


def hosted(provider, tiny_model_dir, **extra) -> TrainConfig:
    return TrainConfig.model_validate({"backend": "openai-compatible", "epochs": 1, "batch_size": 8, "learning_rate": 2e-3, "seed": 1,
                                       "hosted": {"base_url": f"{provider.url}/v1", "model": str(tiny_model_dir), "poll_s": 0.2,
                                                  "retries": 3, "suffix": "triage", **extra}})


def test_a_hosted_run_trains_registers_serves_by_proxy_and_is_evaluated_beside_the_local_one(provider, data, tiny_model_dir, tmp_path):
    provider.fail(2, only="/v1/files")  # the first upload meets two 429s: retried, uploaded once
    model = ModelConfig(name=str(tiny_model_dir))
    out = tmp_path / "hosted"
    summary = train(hosted(provider, tiny_model_dir), model, data, out)
    assert summary["fine_tuned_model"].startswith(f"ft:{tiny_model_dir}:triage:ftjob-") and summary["steps"] == 3
    assert provider.seen["POST /v1/files"] == 2 + 2 and provider.seen["POST /v1/fine_tuning/jobs"] == 1
    state = json.loads(TrainDir(out).remote.read_text())
    assert state["status"] == "succeeded" and set(state["files"]) == {"train", "val"}
    records = [json.loads(line) for line in TrainDir(out).metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and all(r["train_loss"] > 0 and r["val_loss"] > 0 for r in records)
    assert TrainDir(out).loss_plot.is_file() and list(TrainDir(out).result_files.glob("*.csv"))
    uploaded = [json.loads(line) for line in TrainDir(out).uploaded("train").read_text().splitlines()]
    assert uploaded[0] == {"messages": json.loads((data / "train.jsonl").read_text().splitlines()[0])["messages"]}

    registry = Registry(f"sqlite:///{tmp_path / 'local.db'}")
    version = register_run(registry, "hosted-triage", out)
    assert version["method"] == "remote" and version["base_model"] == str(tiny_model_dir)
    log = tmp_path / "requests.jsonl"
    app, _ = build_app(ServeOptions(base=str(tiny_model_dir), registry=registry.url, request_log=str(log), jobs=False, dashboard=False,
                                    aliases={"ft:old-name": str(out)}))
    with running(app) as url:
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0)
        answer = api.chat.completions.create(model="hosted-triage", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert answer.model == "hosted-triage" and answer.usage.completion_tokens > 0
        streamed = api.chat.completions.create(model="hosted-triage", messages=[{"role": "user", "content": "hi"}], max_tokens=3,
                                               stream=True)
        assert all(chunk.model == "hosted-triage" for chunk in streamed)
        by_folder = api.chat.completions.create(model="ft:old-name", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert by_folder.model == "ft:old-name" and "ft:old-name" in {m.id for m in api.models.list()}
        provider.down(only="/v1/chat")
        with pytest.raises(openai.RateLimitError, match="the provider of 'hosted-triage:1' answered HTTP 429"):
            api.chat.completions.create(model="hosted-triage", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        provider.fail(0)
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in logged] == [200, 200, 200, 429] and logged[0]["model"] == "hosted-triage:1"
    assert logged[2]["model"] == out.name  # the aliased run folder, served under its folder's name

    local = tmp_path / "local"
    train(TrainConfig(max_steps=2, batch_size=4, lora=LoraConfig(r=4)), model, data, local)
    cfg = EvalConfig.model_validate({"systems": ["base", "finetuned", {"name": "hosted", "run": str(out)}], "max_new_tokens": 4,
                                     "bootstrap": 100, "regression": False})
    gates = ObjectiveConfig.model_validate({"gates": {"length_chars: finetuned - hosted": ">= -1000"}})
    results = evaluate(cfg, model, TaskConfig(), gates, data, local / "adapter", tmp_path / "eval")
    assert set(results["systems"]) == {"base", "finetuned", "hosted"} and results["gates"][0]["passed"]
    assert results["costs"]["hosted"]["model"] == summary["fine_tuned_model"]
    # The hosted run alone as --model: its answers come from the provider.
    alone = evaluate(EvalConfig(systems=["finetuned"], max_new_tokens=4, bootstrap=100, regression=False), model, TaskConfig(),
                     ObjectiveConfig(), data, out, tmp_path / "eval-hosted")
    assert alone["costs"]["finetuned"]["requests"] == 6


def test_a_provider_that_goes_down_while_followed_loses_nothing_and_resume_follows_the_same_job(provider, data, tiny_model_dir, tmp_path):
    out, cfg, model = tmp_path / "hosted", hosted(provider, tiny_model_dir, retries=1), ModelConfig(name=str(tiny_model_dir))
    provider.down(only="/v1/fine_tuning/jobs/")  # created, then every read of the job fails
    with pytest.raises(TuneloopError, match=r"GET .*/fine_tuning/jobs/ftjob-.*HTTP 429.*after 2 attempts.*rerun"):
        train(cfg, model, data, out)
    job = json.loads(TrainDir(out).remote.read_text())["job"]
    with pytest.raises(TuneloopError, match="already follows hosted job .* --resume"):
        train(cfg, model, data, out)
    provider.fail(0)
    summary = train(cfg, model, data, out, resume=True)
    assert summary["job"] == job and provider.seen["POST /v1/fine_tuning/jobs"] == 1 and provider.seen["POST /v1/files"] == 2


def test_a_refused_job_says_why_and_the_rerun_reuses_the_uploaded_files(provider, data, tiny_model_dir, tmp_path):
    out, model = tmp_path / "hosted", ModelConfig(name=str(tiny_model_dir))
    with pytest.raises(TuneloopError, match=r"POST .*/fine_tuning/jobs: HTTP 400: .*no-such-model"):
        train(hosted(provider, tiny_model_dir) .model_copy(update={"hosted": hosted(provider, tiny_model_dir).hosted.model_copy(
            update={"model": "no-such-model"})}), model, data, out)
    assert provider.seen["POST /v1/fine_tuning/jobs"] == 1  # a 400 is not retried
    summary = train(hosted(provider, tiny_model_dir), model, data, out, resume=True)
    assert summary["fine_tuned_model"] and provider.seen["POST /v1/files"] == 2


def test_hosted_config_errors():
    with pytest.raises(ValueError, match="needs train.hosted"):
        TrainConfig(backend="openai-compatible")
    with pytest.raises(ValueError, match="objective: sft"):
        TrainConfig.model_validate({"backend": "openai-compatible", "objective": "dpo", "hosted": {"base_url": "http://x/v1", "model": "m"}})


def test_a_job_that_ends_badly_at_the_provider_is_reported_and_resume_starts_a_new_one(provider, data, tiny_model_dir, tmp_path):
    out, model = tmp_path / "hosted", ModelConfig(name=str(tiny_model_dir))
    api = openai.OpenAI(base_url=f"{provider.url}/v1", api_key="none", max_retries=0)

    def cancel_once_created():
        deadline = time.time() + 60
        while time.time() < deadline:
            state = json.loads(TrainDir(out).remote.read_text()) if TrainDir(out).remote.is_file() else {}
            if state.get("job"):
                api.fine_tuning.jobs.cancel(state["job"])
                return
            time.sleep(0.05)

    canceller = threading.Thread(target=cancel_once_created)
    canceller.start()
    with pytest.raises(TuneloopError, match=r"hosted job ftjob-\S+ cancelled: .*rerun with --resume to start a new job"):
        train(hosted(provider, tiny_model_dir).model_copy(update={"epochs": 50}), model, data, out)
    canceller.join()
    first = json.loads(TrainDir(out).remote.read_text())["job"]
    summary = train(hosted(provider, tiny_model_dir), model, data, out, resume=True)
    state = json.loads(TrainDir(out).remote.read_text())
    assert summary["job"] != first and state["attempts"] == [{"job": first, "status": "cancelled", "error": "status cancelled"}]
    assert provider.seen["POST /v1/files"] == 2 and provider.seen["POST /v1/fine_tuning/jobs"] == 2


def test_tuneloop_run_with_the_hosted_backend_registers_a_remote_version(provider, tiny_model_dir, tmp_path):
    from tuneloop.config import load_config
    from tuneloop.pipelines.run import run_pipeline

    write_jsonl(tmp_path / "tickets.jsonl", ticket_rows(40))
    (tmp_path / "hosted.yaml").write_text(yaml.safe_dump({
        "name": "hosted-triage", "model": {"name": str(tiny_model_dir)},
        "data": {"inputs": ["tickets.jsonl"], "val_ratio": 0.1, "test_ratio": 0.1},
        "train": {"backend": "openai-compatible", "epochs": 1, "batch_size": 8,
                  "hosted": {"base_url": f"{provider.url}/v1", "model": str(tiny_model_dir), "poll_s": 0.2}},
        "eval": {"systems": ["base", "finetuned"], "max_new_tokens": 4, "bootstrap": 100, "regression": False},
        "registry": {"name": "hosted-triage", "url": f"sqlite:///{tmp_path / 'local.db'}"}}))
    result = run_pipeline(load_config(tmp_path / "hosted.yaml"), tmp_path / "run")
    version = Registry(f"sqlite:///{tmp_path / 'local.db'}").resolve(result["model"])
    assert version["method"] == "remote" and set(result["systems"]) == {"base", "finetuned"}
    assert version["eval_results"]["costs"]["finetuned"]["requests"] == 4
