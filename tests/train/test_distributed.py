"""Data-parallel training: 2 processes under torchrun (gloo, CPU) equal one process accumulating 2 micro-batches."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tuneloop.artifacts import write_manifest
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.train.trainer import train

CFG = dict(max_steps=4, batch_size=4, learning_rate=3e-3, eval_every=2, tensorboard=False, lora={"r": 4, "dropout": 0.0})


def test_two_process_ddp_equals_one_process_with_accumulation(tmp_path, data_dir, tiny_model_dir):
    # The documented command: the CLI under torchrun, one YAML config, one shared --out.
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": str(tiny_model_dir)}, "train": CFG}))
    write_manifest(data_dir, "data", {}, inputs={})
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tuneloop.cli",
         "train", str(config), "--data", str(data_dir), "--out", str(tmp_path / "ddp"), "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    results = [json.loads(line) for line in launched.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2 and all(r["world_size"] == 2 for r in results)

    single = train(TrainConfig(**CFG, grad_accum=2), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "single")
    assert results[0]["final_loss"] == pytest.approx(single["final_loss"], rel=1e-5)
    assert results[0]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    ddp = load_file(tmp_path / "ddp" / "adapter" / "adapter_model.safetensors")
    one = load_file(tmp_path / "single" / "adapter" / "adapter_model.safetensors")
    assert ddp.keys() == one.keys()
    for name in ddp:
        torch.testing.assert_close(ddp[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    # Rank 0 alone wrote the run: one metrics line per step, no interleaving.
    assert [json.loads(x)["step"] for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
