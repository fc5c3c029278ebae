"""Mixture-of-experts training: LoRA on the experts' fused weights, the router frozen and stable, its
load-balancing loss kept in the training loss, and the pre-flight estimate counting active and total parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ticket_rows, write_jsonl
from tests.models.families_kit import KITS, make_family_model
from tuneloop.artifacts import write_manifest
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.models import encode_chat, load_model, load_tokenizer
from tuneloop.models.resolve import resolve_model
from tuneloop.train.batching import collate
from tuneloop.train.loss import answer_loss_sum

CFG = dict(max_steps=10, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, tensorboard=False, lora={"r": 4, "dropout": 0.0})


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory) -> Path:
    return make_family_model(tmp_path_factory.mktemp("mixtral"), KITS["mixtral"], Path(resolve_model("smollm2-135m-instruct")))


@pytest.fixture
def data(tmp_path) -> Path:
    rows = ticket_rows(40)
    write_jsonl(tmp_path / "train.jsonl", rows[:32])
    write_jsonl(tmp_path / "val.jsonl", rows[32:])
    write_manifest(tmp_path, "data", {}, inputs={})
    return tmp_path


def _routes(model, tokenizer, rows) -> torch.Tensor:
    """Each token's top-2 experts in the first layer, over the rows' conversations."""
    ids = torch.tensor([sum((encode_chat(tokenizer, r["messages"], 128).input_ids for r in rows), [])])
    with torch.no_grad():
        out = model(input_ids=ids, output_router_logits=True)
    return out.router_logits[0].topk(2, dim=-1).indices.sort(dim=-1).values


def test_expert_lora_trains_the_experts_and_leaves_the_router_alone(mixtral, data, tmp_path):
    from tuneloop.train.trainer import train

    summary = train(TrainConfig(**CFG), ModelConfig(name=str(mixtral)), data, tmp_path / "run")
    assert summary["final_loss"] < summary["first_loss"]
    weights = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    experts_b = [name for name in weights if "experts" in name and "lora_B" in name]
    assert len(experts_b) == 2 * 2  # gate_up_proj and down_proj, in both layers
    assert all(weights[name].abs().sum() > 0 for name in experts_b)  # B starts at zero: the experts' adapters moved
    assert not any(".gate." in name or name.endswith(".gate.weight") for name in weights)  # the router has no adapter

    # The router's own weights are the base's, and it still sends tokens where it did (most of them).
    tokenizer = load_tokenizer(mixtral)
    base, tuned = load_model(mixtral), load_model(mixtral, adapter=tmp_path / "run" / "adapter")
    for layer in range(2):
        torch.testing.assert_close(tuned.get_base_model().model.layers[layer].mlp.gate.weight, base.model.layers[layer].mlp.gate.weight)
    rows = ticket_rows(4, seed=9)
    agreement = (_routes(base, tokenizer, rows) == _routes(tuned, tokenizer, rows)).all(-1).float().mean()
    assert agreement > 0.7, agreement  # 0.83 measured after these 10 steps at lr 1e-2


def test_the_load_balancing_loss_is_part_of_the_training_loss(mixtral):
    tokenizer = load_tokenizer(mixtral)
    model = load_model(mixtral)
    batch = collate([encode_chat(tokenizer, r["messages"], 128) for r in ticket_rows(3)], tokenizer.pad_token_id)
    with torch.no_grad():
        plain, n = answer_loss_sum(model, batch)
        with_aux, _ = answer_loss_sum(model, batch, router_aux=True)
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_router_logits=True)
    coef = model.config.router_aux_loss_coef
    torch.testing.assert_close((with_aux - plain) / n, coef * reference.aux_loss, rtol=1e-4, atol=1e-6)
    assert with_aux > plain


def test_preflight_counts_active_and_total_parameters(mixtral):
    from tuneloop.train.preflight import estimate

    plan = estimate(str(mixtral), TrainConfig(**CFG), torch.device("cpu"), False, longest=64, longest_target=16,
                    tokens_per_epoch=1000, steps=10)
    model = load_model(mixtral)
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    assert plan.params == total
    assert plan.active_params == total - experts + experts * 2 // 4  # 2 of 4 experts per token
    assert "active" in plan.summary()
    # The trainable count is exactly what peft builds: attention LoRA plus rank r per expert on the expert weights.
    from tuneloop.train.methods.lora import attach_lora

    peft_model = attach_lora(load_model(mixtral).train(), TrainConfig(**CFG))
    assert plan.trainable == sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
