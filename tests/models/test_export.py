"""`tuneloop export`: the merged model generates exactly what the base + adapter generates."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import ticket_rows
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.models import load_model, render_prompt
from tuneloop.models.export import export_run
from tuneloop.train.trainer import train


def greedy(model, tokenizer, prompts: list[str]) -> list[list[int]]:
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        out.append(model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0].tolist())
    return out


@pytest.mark.parametrize("method", ["lora", "dora"])
def test_merged_adapter_generates_the_same_greedy_output_as_the_adapter(tmp_path, tiny_model_dir, method):
    from tests.conftest import write_jsonl

    rows = ticket_rows(24)
    write_jsonl(tmp_path / "train.jsonl", rows)
    # Trained until its answers are peaked: a random tiny model's near-ties would make greedy
    # decoding flip on rounding alone, whichever way the weights were combined.
    cfg = TrainConfig(method=method, max_steps=20, batch_size=8, learning_rate=1e-2, tensorboard=False, lora={"r": 4, "dropout": 0.0})
    train(cfg, ModelConfig(name=str(tiny_model_dir)), tmp_path, tmp_path / "run")

    result = export_run(tmp_path / "run", tmp_path / "export", gguf="f32")
    merged = AutoModelForCausalLM.from_pretrained(result["model"])
    assert not any("lora" in name for name, _ in merged.named_parameters())  # plain transformers weights
    tokenizer = AutoTokenizer.from_pretrained(result["model"])
    adapted = load_model(tiny_model_dir, adapter=tmp_path / "run" / "adapter")
    prompts = [render_prompt(tokenizer, r["messages"][:1]) for r in rows[:4]]
    outputs = greedy(merged, tokenizer, prompts)
    assert outputs == greedy(adapted, tokenizer, prompts)
    assert outputs != greedy(load_model(tiny_model_dir), tokenizer, prompts)  # the adapter did change behaviour
    ids = torch.tensor([outputs[0]])
    torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)

    # The GGUF file carries the same merged weights: llama.cpp-compatible, and transformers reads it back.
    from_gguf = AutoModelForCausalLM.from_pretrained(tmp_path / "export", gguf_file="model.gguf")
    torch.testing.assert_close(from_gguf(ids).logits, merged(ids).logits, atol=1e-4, rtol=1e-4)
    manifest = json.loads((tmp_path / "export" / "manifest.json").read_text())
    assert manifest["stage"] == "export" and manifest["parent"].endswith("run/manifest.json")


def test_export_cli_from_a_full_fine_tuning_run(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from tests.conftest import write_jsonl
    from tuneloop.cli import app

    write_jsonl(tmp_path / "train.jsonl", ticket_rows(8))
    train(TrainConfig(method="full", max_steps=1, batch_size=8, tensorboard=False), ModelConfig(name=str(tiny_model_dir)), tmp_path, tmp_path / "run")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "run"), "--out", str(tmp_path / "exp"), "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "exp" / "model" / "config.json").is_file()
    assert torch.equal(AutoModelForCausalLM.from_pretrained(tmp_path / "exp" / "model").lm_head.weight,
                       AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "model").lm_head.weight)
