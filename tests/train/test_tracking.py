"""Tracking to MLflow and Weights & Biases (offline): the same per-step metrics as metrics.jsonl, the config as
params, the loss plot and the adapter as artifacts, and the evaluation and registry version added to the same run,
read back with mlflow.get_run / get_metric_history and from the W&B run file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tuneloop.config import LoraConfig, ModelConfig, TrainConfig
from tuneloop.layout import TrainDir
from tuneloop.train.tracking import log_evaluation, log_registration
from tuneloop.train.trainer import train

pytest.importorskip("mlflow")
pytest.importorskip("wandb")


def wandb_records(path: Path):
    """The records of a W&B run file: a 7-byte header, then LevelDB log records in 32 KiB blocks (crc, length,
    type), each a wandb Record protobuf."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a header is padding
            position += 32768 - position % 32768
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record
        elif kind == 0 and not length:
            position += 32768 - position % 32768


def items(entries) -> dict:
    return {entry.key or "/".join(entry.nested_key): json.loads(entry.value_json) for entry in entries}


def test_mlflow_and_wandb_get_the_runs_metrics_params_and_files(tmp_path, data_dir, tiny_model_dir):
    import mlflow

    cfg = TrainConfig(max_steps=6, batch_size=8, eval_every=3, lora=LoraConfig(r=4, dropout=0.0), tracking=["mlflow", "wandb"],
                      mlflow={"uri": str(tmp_path / "mlruns"), "experiment": "triage"})
    out = tmp_path / "run"
    train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, out)
    records = [json.loads(line) for line in TrainDir(out).metrics.read_text().splitlines()]
    ids = json.loads(TrainDir(out).trackers.read_text())
    assert not TrainDir(out).tensorboard.exists()  # tracking named without tensorboard

    mlflow.set_tracking_uri(ids["mlflow_uri"])
    run = mlflow.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED" and run.data.params["lora.r"] == "4" and run.data.params["model"] == str(tiny_model_dir)
    client = mlflow.MlflowClient(ids["mlflow_uri"])
    history = client.get_metric_history(ids["mlflow"], "train_loss")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["train_loss"])) for r in records]
    assert [m.step for m in client.get_metric_history(ids["mlflow"], "val_loss")] == [3, 6]
    artifacts = {a.path for a in client.list_artifacts(ids["mlflow"])}
    assert {"loss.png", "metrics.jsonl", "adapter"} <= artifacts

    log_evaluation(out, {"systems": {"finetuned": {"json_valid": 0.5}}, "gates": [{"passed": True}], "objective_passed": True})
    log_registration(out, {"ref": "triage:3"})
    run = mlflow.get_run(ids["mlflow"])
    assert run.data.metrics["eval/finetuned/json_valid"] == 0.5 and run.data.metrics["eval/gates_passed"] == 1.0 and run.data.tags["tuneloop.registry_version"] == "triage:3"

    # (the training's run folder first; the evaluation's addition comes as a second offline folder of the same run)
    files = sorted(TrainDir(out).wandb.glob(f"offline-run-*-{ids['wandb']}/run-{ids['wandb']}.wandb"))
    assert files, list(TrainDir(out).wandb.rglob("*"))
    history = [items(r.history.item) for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == [r["step"] for r in records]
    assert [h["train_loss"] for h in history] == pytest.approx([r["train_loss"] for r in records])
    config = next(r.run.config for r in wandb_records(files[0]) if r.WhichOneof("record_type") == "run")
    assert items(config.update)["lora.r"] == 4
