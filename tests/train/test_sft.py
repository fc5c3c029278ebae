"""LoRA SFT on a tiny model: adapters learn, the base stays frozen, accumulation is exact, artifacts land."""

import json

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

from tests.conftest import ticket_rows
from tuneloop.config import LoraConfig, ModelConfig, TrainConfig
from tuneloop.models import encode_chat, load_model
from tuneloop.train.batching import collate
from tuneloop.train.loss import answer_loss_sum
from tuneloop.train.trainer import train


def test_training_writes_a_peft_adapter_that_learned(tmp_path, data_dir, tiny_model_dir):
    cfg = TrainConfig(max_steps=25, batch_size=8, learning_rate=3e-3, eval_every=5, lora=LoraConfig(r=8, alpha=16, dropout=0.0))
    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 26))
    assert all({"train_loss", "lr", "tokens_per_s"} <= r.keys() for r in records)
    val = [r["val_loss"] for r in records if "val_loss" in r]
    assert len(val) == 5 and val[-1] < val[0]  # it learned something that generalises to held-out rows
    assert summary["final_loss"] < summary["first_loss"]
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stage"] == "train" and manifest["parent"].endswith("manifest.json")


def test_lora_changes_adapters_and_leaves_base_weights_alone(tmp_path, data_dir, tiny_model_dir):
    train(TrainConfig(max_steps=2, batch_size=4, lora=LoraConfig(r=4, dropout=0.0)), ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    base = load_model(tiny_model_dir)
    tuned = load_model(tiny_model_dir, adapter=tmp_path / "run" / "adapter")
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # lora_B starts at zero: nonzero means trained
    base_q = base.model.layers[0].self_attn.q_proj.weight
    tuned_q = tuned.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(base_q, tuned_q)


def test_gradient_accumulation_equals_the_large_batch(tokenizer, tiny_model_dir):
    """Batch 8 x accumulation 1 and batch 2 x accumulation 4 give the same gradients (fp32 tolerance)."""
    examples = [encode_chat(tokenizer, [{"role": "system", "content": "s"}, *r["messages"]], 128) for r in ticket_rows(8)]
    # Uneven answer lengths make naive per-micro-batch averaging wrong; the token-weighted sum is not.
    examples[0].labels[-6:-1] = [-100] * 5

    def grads(micro: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model = get_peft_model(load_model(tiny_model_dir), PeftLoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", init_lora_weights=False))
        model.train()
        groups = [collate(examples[i : i + micro], tokenizer.pad_token_id) for i in range(0, 8, micro)]
        n_tokens = sum(int((g["labels"][:, 1:] != -100).sum()) for g in groups)
        for group in groups:
            loss_sum, _ = answer_loss_sum(model, group)
            (loss_sum / n_tokens).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    big, small = grads(8), grads(2)
    for name in big:
        torch.testing.assert_close(small[name], big[name], rtol=1e-4, atol=1e-6, msg=name)


def test_loss_only_counts_answer_tokens(tokenizer, tiny_model_dir):
    example = encode_chat(tokenizer, ticket_rows(1)[0]["messages"], 128)
    batch = collate([example], tokenizer.pad_token_id)
    _, n = answer_loss_sum(load_model(tiny_model_dir), batch)
    assert n == example.n_target - (1 if example.labels[0] != -100 else 0)
