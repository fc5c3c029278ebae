"""Checkpoints: a SIGKILLed run resumes to the same weights as an unbroken one; early stopping; NaN guard."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.config import EarlyStopping, LoraConfig, ModelConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.train.checkpoint import latest_checkpoint
from tuneloop.train.trainer import train

STEPS = 40
# Dropout on, so that resuming must restore the RNG too, not only weights and optimizer.
CFG = dict(max_steps=STEPS, batch_size=4, grad_accum=2, learning_rate=2e-3, save_every=4, keep_last=2,
           eval_every=10, lora={"r": 4, "alpha": 8, "dropout": 0.1})
CHILD = """
import sys
from pathlib import Path
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.train.trainer import train
cfg = TrainConfig.model_validate({cfg})
train(cfg, ModelConfig(name=sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), resume=sys.argv[4] == "resume")
"""


def child(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD.format(cfg=CFG), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_killed_run_resumes_to_the_same_weights_as_an_unbroken_run(tmp_path, data_dir, tiny_model_dir):
    unbroken = child([tiny_model_dir, data_dir, tmp_path / "a", "fresh"])
    assert unbroken.wait(300) == 0, unbroken.stderr.read().decode()[-2000:]

    killed = child([tiny_model_dir, data_dir, tmp_path / "b", "fresh"])
    deadline = time.time() + 300
    while latest_checkpoint(tmp_path / "b" / "checkpoints") is None or "step-0000008" > latest_checkpoint(tmp_path / "b" / "checkpoints").name:
        assert time.time() < deadline and killed.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait(60) == -signal.SIGKILL
    assert not (tmp_path / "b" / "adapter").exists()  # it really died mid-training

    resumed = child([tiny_model_dir, data_dir, tmp_path / "b", "resume"])
    assert resumed.wait(300) == 0, resumed.stderr.read().decode()[-2000:]
    assert b"resuming from" in resumed.stderr.read()

    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-6, msg=name)
    records = [[json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()] for run in "ab"]
    assert [r["step"] for r in records[1]] == list(range(1, STEPS + 1))  # no step lost or repeated
    assert records[1][-1]["train_loss"] == pytest.approx(records[0][-1]["train_loss"], abs=1e-6)
    kept = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert len([k for k in kept if k.startswith("step-")]) <= 3 and not [k for k in kept if k.endswith(".tmp")]


def test_early_stopping_exports_the_best_checkpoint(tmp_path, data_dir, tiny_model_dir):
    # A learning rate this high overfits and diverges quickly on 32 rows: validation stops improving.
    cfg = TrainConfig(max_steps=60, batch_size=8, learning_rate=3e-2, eval_every=2, warmup_ratio=0.0,
                      early_stopping=EarlyStopping(patience=2), lora=LoraConfig(r=4, dropout=0.0))
    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    best_step, best_val = min(val, key=lambda sv: sv[1])
    assert summary["stopped_early"] and summary["steps"] < 60
    assert summary["best_step"] == best_step and summary["best_val_loss"] == pytest.approx(best_val)
    assert [s for s, _ in val][-2:] == [best_step + 2, best_step + 4]  # stopped after `patience` worse evaluations
    exported = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    best = load_file(tmp_path / "run" / "checkpoints" / f"step-{best_step:07d}" / "weights" / "adapter_model.safetensors")
    assert all(torch.equal(exported[k], best[k]) for k in best)


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    # A model whose input embeddings for one rare word are NaN: the loss turns NaN exactly when the
    # batch holding that word comes up (untied, so the output head stays finite before that).
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False))
    poison = tokenizer(" Zyzzyva", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.model.embed_tokens.weight[poison] = float("nan")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    rows = ticket_rows(16)
    rows[-1]["messages"][0]["content"] += " Zyzzyva"
    write_jsonl(tmp_path / "train.jsonl", rows)

    cfg = TrainConfig(max_steps=4, batch_size=4, save_every=1, lora=LoraConfig(r=4, dropout=0.0))
    with pytest.raises(TuneloopError, match=r"training loss became nan at step (\d+); stopped before updating") as err:
        train(cfg, ModelConfig(name=str(tmp_path / "model")), tmp_path, tmp_path / "run")
    failed_at = int(re.search(r"at step (\d+)", str(err.value))[1])
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert failed_at > 1  # the poisoned row is not in the first batch: there is a good checkpoint to keep
    assert last.name == f"step-{failed_at - 1:07d}" and str(last) in str(err.value)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == failed_at - 1 and not (tmp_path / "run" / "adapter").exists()


def test_schedules(tmp_path, data_dir, tiny_model_dir):
    for schedule in ("linear", "constant"):
        cfg = TrainConfig(max_steps=4, batch_size=8, warmup_ratio=0.25, scheduler=schedule, lora=LoraConfig(r=4))
        train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / schedule)
        lrs = [json.loads(line)["lr"] for line in (tmp_path / schedule / "metrics.jsonl").read_text().splitlines()]
        if schedule == "constant":
            assert lrs[1:] == [cfg.learning_rate] * 3
        else:
            assert lrs[-1] == 0.0 and lrs[1] > lrs[2] > lrs[3]


class _Payload:
    """A pickle that, when loaded, would write a file: what a hostile state.pt in a copied run folder does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_state_in_a_run_folder_is_never_loaded(tmp_path, data_dir, tiny_model_dir):
    cfg = TrainConfig(max_steps=2, batch_size=8, save_every=1, lora=LoraConfig(r=4, dropout=0.0))
    train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    marker = tmp_path / "pwned"
    for checkpoint in (tmp_path / "run" / "checkpoints").glob("step-*"):
        for name in ("state.json", "state.safetensors"):
            (checkpoint / name).unlink()
        torch.save({"step": 1, "records": [], "x": _Payload(marker)}, checkpoint / "state.pt")
    with pytest.raises(TuneloopError, match="older tuneloop, whose checkpoint state is a pickle"):
        train(cfg.model_copy(update={"max_steps": 4}), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run", resume=True)
    assert not marker.exists()


def test_a_corrupt_state_file_is_a_clear_error(tmp_path, data_dir, tiny_model_dir):
    cfg = TrainConfig(max_steps=2, batch_size=8, save_every=1, lora=LoraConfig(r=4, dropout=0.0))
    train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    last = latest_checkpoint(tmp_path / "run" / "checkpoints")
    (last / "state.safetensors").write_bytes(b"\x80\x04not safetensors")
    with pytest.raises(TuneloopError, match="unreadable checkpoint state"):
        train(cfg.model_copy(update={"max_steps": 4}), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run", resume=True)


def test_select_by_a_task_metric_scores_validation_answers_and_drives_early_stopping(tmp_path, data_dir, tiny_model_dir):
    # The tiny model never writes JSON: json_valid stays 0, so its first evaluation stays the best and
    # early stopping ends the run after `patience` more, whatever the validation loss does.
    cfg = TrainConfig(max_steps=40, batch_size=8, learning_rate=1e-3, eval_every=2, warmup_ratio=0.0, select_by="json_valid",
                      val_answers=4, early_stopping=EarlyStopping(patience=2), lora=LoraConfig(r=4, dropout=0.0))
    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in records if "val_loss" in r]
    assert all("val_json_valid" in r and "val_rougeL" in r for r in evaluated)
    assert [r["step"] for r in evaluated] == [2, 4, 6] and summary["stopped_early"]
    assert summary["selected_by"] == "val_json_valid" and summary["best_selection"] == 0.0 and summary["best_step"] == 2
    marker = json.loads((tmp_path / "run" / "checkpoints" / "best.json").read_text())
    assert marker == {"step": 2, "val_json_valid": 0.0}
