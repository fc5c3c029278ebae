"""Sharded training (`train.distributed: fsdp`): 2 processes under torchrun (gloo, CPU) accumulating 2 micro-batches
each equal one process accumulating 4, checkpoints are per-rank shards of safetensors + JSON, and a run killed with
-9 resumes from its shards to the unbroken run's weights."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.artifacts import write_manifest
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.layout import TrainDir
from tuneloop.train.sharded import load_sharded
from tuneloop.train.trainer import train

STEPS = 12
# Early stopping that never stops but only ever counts the first evaluation as an improvement: the export is
# the best checkpoint's (step 4), read back from its shards, not the last weights.
BEST = 4
CFG = dict(max_steps=STEPS, batch_size=4, grad_accum=2, learning_rate=3e-3, eval_every=BEST, save_every=2, keep_last=8, tensorboard=False,
           lora={"r": 4, "dropout": 0.0}, distributed="fsdp", early_stopping={"patience": 10, "min_delta": 100.0})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rows = ticket_rows(40)
    write_jsonl(folder / "train.jsonl", rows[:32])
    write_jsonl(folder / "val.jsonl", rows[32:])
    write_manifest(folder, "data", {}, inputs={})
    return folder


def _launch(tmp_path, model_dir, data_dir, out, cfg: dict, resume=False, wait=True):
    config = tmp_path / f"{out.name}.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": str(model_dir)}, "train": cfg}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tuneloop.cli",
               "train", str(config), "--data", str(data_dir), "--out", str(out), "--json", *(["--resume"] if resume else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:  # its own process group, so that kill -9 reaches torchrun and both ranks
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    launched = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert launched.returncode == 0, launched.stderr[-3000:]
    return [json.loads(line) for line in launched.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory, data, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("fsdp")
    return tmp / "run", _launch(tmp, tiny_model_dir, data, tmp / "run", CFG)


def _losses(run) -> list[float]:
    return [json.loads(line)["train_loss"] for line in TrainDir(run).metrics.read_text().splitlines()]


def test_two_process_fsdp_equals_one_process_with_accumulation(tmp_path, data, tiny_model_dir, sharded_run):
    run, results = sharded_run
    assert len(results) == 2 and all(r["world_size"] == 2 for r in results)
    single = train(TrainConfig(**{**CFG, "grad_accum": 4}), ModelConfig(name=str(tiny_model_dir)), data, tmp_path / "single")
    assert _losses(run) == pytest.approx(_losses(tmp_path / "single"), rel=1e-5)
    assert results[0]["val_loss"] == pytest.approx(single["val_loss"], rel=1e-5)
    main = next(r for r in results if "best_step" in r)  # rank 0's summary (the other rank writes nothing)
    assert main["best_step"] == single["best_step"] == BEST
    sharded = load_file(TrainDir(run).adapter / "adapter_model.safetensors")
    one = load_file(TrainDir(tmp_path / "single").adapter / "adapter_model.safetensors")
    assert sharded.keys() == one.keys()
    for name in sharded:
        torch.testing.assert_close(sharded[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    assert [json.loads(x)["step"] for x in TrainDir(run).metrics.read_text().splitlines()] == list(range(1, STEPS + 1))


def test_checkpoints_are_per_rank_shards_of_safetensors_and_json(sharded_run):
    run, _ = sharded_run
    checkpoint = TrainDir(run).checkpoints.at(STEPS)
    assert not checkpoint.weights.exists()  # no rank gathered the weights to write them whole
    full = sum(t.numel() for t in load_file(TrainDir(run).adapter / "adapter_model.safetensors").values())
    held = []
    for rank in (0, 1):
        shard = checkpoint.shard(rank)
        index = json.loads(shard.index.read_text())
        assert index["world_size"] == 2 and index["rank"] == rank
        slices = load_file(shard.weights)
        assert slices.keys() == index["tensors"].keys()
        for name, tensor in slices.items():
            entry = index["tensors"][name]
            assert list(tensor.shape[1:]) == entry["shape"][1:] and entry["offset"] == (0 if rank == 0 else entry["shape"][0] - tensor.shape[0])
        held.append(sum(t.numel() for t in slices.values()))
    assert sum(held) == full and all(0.4 < h / full < 0.6 for h in held)
    # The exported adapter is the best checkpoint's shards put back together.
    exported = load_file(TrainDir(run).adapter / "adapter_model.safetensors")
    best = [load_file(TrainDir(run).checkpoints.at(BEST).shard(rank).weights) for rank in (0, 1)]
    for name, pieces in ((n, [b[n] for b in best]) for n in best[0]):
        torch.testing.assert_close(torch.cat(pieces), exported[name.replace(".default", "")], rtol=0, atol=0, msg=name)
    # Nothing anywhere in the run folder is a pickle or a zip (torch.save's format): JSON, safetensors, text, PNG.
    for path in (p for p in run.rglob("*") if p.is_file()):
        assert not path.read_bytes()[:4] == b"PK\x03\x04", path
        if path.suffix == ".safetensors":
            with safe_open(str(path), "pt"):
                pass
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            assert path.suffix in {".jsonl", ".png", ".txt", ".jinja", ".md"} or path.name == ".train.lock", path


def test_kill_9_then_resume_reaches_the_unbroken_weights(tmp_path, data, tiny_model_dir, sharded_run):
    unbroken, _ = sharded_run
    out = tmp_path / "killed"
    process = _launch(tmp_path, tiny_model_dir, data, out, CFG, wait=False)
    first = TrainDir(out).checkpoints.at(2).state
    deadline = time.time() + 300
    while not first.is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    _kill_9(process.pid)
    process.wait()
    assert first.is_file(), process.stderr.read().decode()[-3000:]
    assert not TrainDir(out).adapter.exists(), "the run finished before it was killed"
    reached = max(c.step for c in TrainDir(out).checkpoints.complete())
    assert reached < STEPS

    results = _launch(tmp_path, tiny_model_dir, data, out, CFG, resume=True)
    assert results[0]["resumed_from"] == reached
    assert _losses(out) == pytest.approx(_losses(unbroken), rel=1e-6)
    resumed = load_file(TrainDir(out).adapter / "adapter_model.safetensors")
    for name, tensor in load_file(TrainDir(unbroken).adapter / "adapter_model.safetensors").items():
        torch.testing.assert_close(resumed[name], tensor, rtol=1e-5, atol=1e-7, msg=name)


def _kill_9(pid: int) -> None:
    """SIGKILL torchrun's process group and every worker: torch elastic starts each worker in a session of its
    own, so killing torchrun's group alone leaves the ranks training (over gloo they do not need torchrun)."""
    tree, todo = [], [pid]
    while todo:
        parent = todo.pop()
        tree.append(parent)
        for task in Path(f"/proc/{parent}/task").glob("*"):
            todo += [int(child) for child in (task / "children").read_text().split()] if (task / "children").exists() else []
    for member in tree:
        try:
            os.killpg(member, signal.SIGKILL)  # each worker leads its own group
        except ProcessLookupError:
            pass


def test_resuming_with_another_world_size_is_a_clear_error(tmp_path, data, tiny_model_dir, sharded_run):
    run, _ = sharded_run
    shutil.copytree(TrainDir(run).checkpoints.root, TrainDir(tmp_path / "copy").checkpoints.root)
    with pytest.raises(TuneloopError, match="sharded across 2 ranks and this run has one unsharded process"):
        train(TrainConfig(**CFG), ModelConfig(name=str(tiny_model_dir)), data, tmp_path / "copy", resume=True)
    with pytest.raises(TuneloopError, match="sharded across 2 ranks and this run has 3"):
        load_sharded(TrainDir(run).checkpoints.at(STEPS).path, None, None, None, SimpleNamespace(size=3, rank=0, main=True))


def test_full_fine_tuning_under_fsdp_equals_one_process(tmp_path, data, tiny_model_dir):
    cfg = dict(max_steps=3, batch_size=4, grad_accum=2, learning_rate=1e-3, tensorboard=False, method="full", distributed="fsdp")
    results = _launch(tmp_path, tiny_model_dir, data, tmp_path / "fsdp", cfg)
    assert results[0]["world_size"] == 2
    train(TrainConfig(**{**cfg, "grad_accum": 4}), ModelConfig(name=str(tiny_model_dir)), data, tmp_path / "single")
    assert _losses(tmp_path / "fsdp") == pytest.approx(_losses(tmp_path / "single"), rel=1e-5)
    folder = TrainDir(tmp_path / "fsdp").model
    assert json.loads((folder / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    sharded, one = load_file(folder / "model.safetensors"), load_file(TrainDir(tmp_path / "single").model / "model.safetensors")
    assert sharded.keys() == one.keys()
    # AdamW divides by the root of the second moment, so an element whose gradient is ~0 moves on rounding noise:
    # the ranks' sum and one process's accumulation add in another fp32 order (measured: 3 of 3.2M elements
    # differ by 1e-6..6e-6 after 3 steps; the rest by < 3e-7).
    for name in one:
        torch.testing.assert_close(sharded[name], one[name], rtol=1e-4, atol=5e-5, msg=name)


def test_preflight_divides_the_sharded_terms_by_the_world_size(tmp_path):
    from transformers import LlamaConfig

    from tuneloop.train.preflight import estimate

    LlamaConfig(vocab_size=1000, hidden_size=256, intermediate_size=688, num_hidden_layers=8, num_attention_heads=4).save_pretrained(tmp_path)
    cfg = TrainConfig(method="full", distributed="fsdp")
    sizes = dict(longest=64, longest_target=16, tokens_per_epoch=1000, steps=10)
    whole = estimate(str(tmp_path), cfg, torch.device("cpu"), False, **sizes)
    halves = estimate(str(tmp_path), cfg, torch.device("cpu"), False, **sizes, shards=2)
    assert halves.training_state_gb == pytest.approx(whole.training_state_gb / 2)
    assert whole.weights_gb / 2 < halves.weights_gb < whole.weights_gb  # its shard plus the groups it gathers
    assert halves.activations_gb == whole.activations_gb
    assert "sharded across 2 ranks by FSDP (activations are not sharded" in halves.summary()
    assert "FSDP" not in whole.summary()
