"""Each training method on a tiny model: loss falls, what should train changes, what is frozen does not."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.conftest import ticket_rows, write_jsonl
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.models import load_model
from tuneloop.train.sft import Sft
from tuneloop.train.trainer import train


def records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_dora_trains_magnitudes_and_adapters_and_leaves_the_base_alone(tmp_path, data_dir, tiny_model_dir):
    cfg = TrainConfig(method="dora", max_steps=12, batch_size=8, learning_rate=3e-3, lora={"r": 4, "dropout": 0.0})
    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    assert summary["final_loss"] < summary["first_loss"]
    adapter = tmp_path / "run" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["use_dora"] is True
    weights = load_file(adapter / "adapter_model.safetensors")
    assert any("lora_magnitude_vector" in name for name in weights)
    assert any("lora_B" in name and w.abs().sum() > 0 for name, w in weights.items())
    tuned = load_model(tiny_model_dir, adapter=adapter)
    base = load_model(tiny_model_dir)
    assert torch.equal(base.model.layers[1].mlp.down_proj.weight, tuned.get_base_model().model.layers[1].mlp.down_proj.base_layer.weight)


def test_full_fine_tuning_changes_every_weight_and_writes_a_plain_model_folder(tmp_path, data_dir, tiny_model_dir):
    cfg = TrainConfig(method="full", max_steps=10, batch_size=8, learning_rate=1e-3, eval_every=5)
    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    assert summary["final_loss"] < summary["first_loss"] and summary["trainable_params"] > 1_000_000
    assert not (tmp_path / "run" / "adapter").exists()
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model")  # a plain HF folder
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    changed = {n for (n, a), (_, b) in zip(base.named_parameters(), tuned.named_parameters()) if not torch.equal(a, b)}
    assert changed == {n for n, _ in base.named_parameters()}


def test_loss_on_all_tokens_is_configurable(tokenizer, data_dir):
    answers = Sft(tokenizer, data_dir, TrainConfig()).train_set[0]
    everything = Sft(tokenizer, data_dir, TrainConfig(loss_on="all")).train_set[0]
    assert answers.input_ids == everything.input_ids
    assert answers.n_target < everything.n_target == len(everything.input_ids)


def test_qlora_without_cuda_fails_up_front_with_a_clear_message(tmp_path, data_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TuneloopError, match="qlora' needs a CUDA GPU.*Use train.method 'lora'"):
        train(TrainConfig(method="qlora"), ModelConfig(name="no-such-model-is-ever-loaded"), data_dir, tmp_path / "run")


def test_bf16_is_refused_where_unsupported(tmp_path, data_dir, tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(TuneloopError, match="bf16"):
        train(TrainConfig(precision="bf16"), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")


def test_tensorboard_event_files_hold_the_curves(tmp_path, data_dir, tiny_model_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(TrainConfig(max_steps=4, batch_size=8, eval_every=2), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/lr", "train/tokens_per_s", "val/loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in events.Scalars("val/loss")] == [2, 4]


def test_preflight_refuses_a_run_that_cannot_fit_before_loading_weights(tmp_path, data_dir, tiny_model_dir, monkeypatch):
    import tuneloop.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_model", lambda *a: pytest.fail("weights were loaded"))
    with pytest.raises(TuneloopError, match="would not fit in memory.*lower train.batch_size"):
        train(TrainConfig(memory_limit_gb=0.1), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")


def test_preflight_turns_on_gradient_checkpointing_when_only_that_fits(tmp_path, data_dir, tiny_model_dir):
    from tuneloop.train.preflight import estimate

    common = dict(longest=2048, longest_target=64, tokens_per_epoch=10_000, steps=10)
    cfg = TrainConfig(batch_size=64, max_seq_len=2048)
    free = estimate(str(tiny_model_dir), cfg, torch.device("cpu"), False, **common)
    squeezed = TrainConfig(batch_size=64, max_seq_len=2048, memory_limit_gb=free.peak_gb - 0.05)
    tight = estimate(str(tiny_model_dir), squeezed, torch.device("cpu"), False, **common)
    assert not free.gradient_checkpointing and tight.gradient_checkpointing and tight.peak_gb < free.peak_gb


def test_dry_run_estimates_and_writes_nothing(tmp_path, data_dir, tiny_model_dir):
    result = train(TrainConfig(batch_size=8, epochs=2), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run", dry_run=True)
    assert result["dry_run"] and result["trainable"] > 0 and result["params"] > result["trainable"]
    assert result["estimated_seconds"] > 0 and result["steps"] == 8 and result["peak_gb"] > 0
    assert not (tmp_path / "run").exists()


def test_gradient_checkpointing_gives_the_same_loss(tmp_path, data_dir, tiny_model_dir):
    runs = [train(TrainConfig(max_steps=3, batch_size=8, gradient_checkpointing=flag, lora={"dropout": 0.0}),
                  ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / str(flag)) for flag in (False, True)]
    assert runs[0]["final_loss"] == pytest.approx(runs[1]["final_loss"], rel=1e-4)


@pytest.fixture
def preference_dir(tmp_path):
    """Pairs whose chosen answer names the ticket's category and whose rejected answer names another."""
    rows = ticket_rows(40)
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:],
              "rejected": [{"role": "assistant", "content": rows[(i + 1) % len(rows)]["messages"][1]["content"]}]}
             for i, r in enumerate(rows)]
    write_jsonl(tmp_path / "train.jsonl", pairs[:32])
    write_jsonl(tmp_path / "val.jsonl", pairs[32:])
    return tmp_path


@pytest.mark.parametrize("method", ["lora", "full"])
def test_dpo_learns_to_prefer_the_chosen_answers(tmp_path, preference_dir, tiny_model_dir, method):
    cfg = TrainConfig(objective="dpo", method=method, max_steps=30, batch_size=8, eval_every=5,
                      learning_rate=5e-3 if method == "lora" else 5e-4, dpo={"beta": 0.5}, lora={"dropout": 0.0})
    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), preference_dir, tmp_path / "run")
    log = records(tmp_path / "run")
    assert log[0]["train_loss"] == pytest.approx(0.6931, abs=0.02)  # policy == reference at the start: log 2
    recent = sum(r["train_loss"] for r in log[-5:]) / 5  # one shuffled batch's loss is noisy; five are not
    assert recent < 0.6 and summary["reward_margin"] > 0 and summary["reward_accuracy"] > 0.7
    assert {"val_loss", "val_reward_margin", "val_reward_accuracy"} <= log[-1].keys()
    assert log[-1]["val_reward_accuracy"] > 0.5


def test_dpo_on_sft_data_says_what_it_needs(tmp_path, data_dir, tiny_model_dir):
    with pytest.raises(TuneloopError, match=r"train.jsonl:1: train.objective 'dpo' needs preference pairs"):
        train(TrainConfig(objective="dpo"), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
