"""The family matrix: for a tiny random model of each supported family (Llama, Mistral, Qwen2/3, Gemma 2/3, Phi-3,
and the MoE families Mixtral, Qwen2-MoE, Qwen3-MoE), with its family's chat template:

- the template renders, the end-of-turn token is what the labels end each answer with;
- LoRA SFT trains (the loss falls) and DPO runs;
- merge-export is greedy-equal to base + adapter, and a GGUF file (where the exporter writes the family) reads back;
- the server answers through the official openai client.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import openai
import pytest
import torch

from tests.conftest import running, ticket_rows, write_jsonl
from tests.models.families_kit import KITS, make_family_model
from tuneloop.artifacts import write_manifest
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.models import encode_chat, load_model, load_tokenizer
from tuneloop.models.chat import IGNORE, end_of_turn_id, render_prompt, traits
from tuneloop.models.families import FAMILIES, family_of, lora_targets
from tuneloop.models.resolve import resolve_model

SFT = dict(max_steps=10, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, scheduler="constant", tensorboard=False,
           lora={"r": 8, "alpha": 16, "dropout": 0.0})
CONVERSATION = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "More"},
                {"role": "assistant", "content": "Sure."}]


@pytest.fixture(scope="module", params=sorted(KITS))
def family(request, tmp_path_factory):
    kit = KITS[request.param]
    folder = make_family_model(tmp_path_factory.mktemp(kit.model_type), kit, Path(resolve_model("smollm2-135m-instruct")))
    return kit, folder


def test_the_table_covers_every_kit():
    assert {t for f in FAMILIES for t in f.model_types} >= set(KITS)


def test_the_template_renders_and_the_end_of_turn_is_trained(family):
    kit, folder = family
    tokenizer = load_tokenizer(folder)
    assert traits(tokenizer).end_of_turn == kit.end_of_turn and traits(tokenizer).fold_system == kit.fold_system
    encoded = encode_chat(tokenizer, CONVERSATION, 512)
    eot = end_of_turn_id(tokenizer)
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE]
    assert trained.count(eot) == 2 and trained[-1] == eot  # both answers end with it, and nothing else is trained after
    assert "Be brief." in tokenizer.decode(encoded.input_ids)  # the system text survives (folded where it must be)
    prompt = render_prompt(tokenizer, CONVERSATION[:2])
    assert "Be brief." in prompt and tokenizer.decode(encoded.input_ids).startswith(prompt)


def test_our_loss_equals_the_models_own_padded_and_packed(family):
    """The fast loss (head on answer tokens only, chunked; packed rows) is the model's own cross-entropy."""
    from tuneloop.train.batching import collate
    from tuneloop.train.loss import answer_loss_sum
    from tuneloop.train.packing import pack, packed_attention, supports_packing

    kit, folder = family
    tokenizer = load_tokenizer(folder)
    model = load_model(folder)
    examples = [encode_chat(tokenizer, r["messages"], 256) for r in ticket_rows(3)]
    with torch.no_grad():
        own = sum(model(input_ids=torch.tensor([e.input_ids]), labels=torch.tensor([e.labels])).loss * (e.n_target - 0)
                  for e in examples)
        # transformers averages over the targets after the shift: n_target minus a first-token target (none here)
        padded, n = answer_loss_sum(model, collate(examples, tokenizer.pad_token_id))
        torch.testing.assert_close(padded, own, rtol=1e-4, atol=1e-3)
        if supports_packing(model, 256):
            with packed_attention(model):
                packed, _ = answer_loss_sum(model, pack(examples))
            torch.testing.assert_close(packed, own, rtol=1e-4, atol=1e-3)
        else:
            assert kit.model_type == "gemma2"  # soft-capped attention: batches stay padded
    assert n == sum(e.n_target for e in examples)


def test_train_export_serve_and_dpo(family, tmp_path):
    kit, folder = family
    rows = ticket_rows(40)
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "train.jsonl", rows[:32])
    write_jsonl(data / "val.jsonl", rows[32:])
    write_manifest(data, "data", {}, inputs={})
    from tuneloop.train.trainer import train

    summary = train(TrainConfig(**SFT), ModelConfig(name=str(folder)), data, tmp_path / "sft")
    assert summary["final_loss"] < summary["first_loss"] - 0.3, summary  # from ~ln(49k) = 10.8 nats: the random base is far off
    adapter = tmp_path / "sft" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    if family_of({"model_type": kit.model_type}).moe:
        assert config["target_parameters"], config  # the experts are adapted too

    # Merge-export: the plain model folder answers greedily as base + adapter does.
    from tuneloop.models.export import export_run

    gguf_arch = family_of({"model_type": kit.model_type}).gguf_arch
    exported = export_run(tmp_path / "sft", tmp_path / "export", gguf="f32" if gguf_arch else None)
    tokenizer = load_tokenizer(folder)
    ids = torch.tensor([tokenizer(render_prompt(tokenizer, rows[35]["messages"][:1]), add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        merged = load_model(exported["model"]).generate(ids, max_new_tokens=12, do_sample=False)
        attached = load_model(folder, adapter=adapter).generate(ids, max_new_tokens=12, do_sample=False)
    assert merged.tolist() == attached.tolist()
    if gguf_arch:
        import gguf

        reader = gguf.GGUFReader(exported["gguf"])
        arch = reader.fields["general.architecture"]
        assert bytes(arch.parts[arch.data[0]]).decode() == gguf_arch
        from safetensors import safe_open

        with safe_open(Path(exported["model"]) / "model.safetensors", framework="pt") as weights:
            tied = json.loads((Path(exported["model"]) / "config.json").read_text()).get("tie_word_embeddings")
            written = [name for name in weights.keys() if not (name == "lm_head.weight" and tied)]
        assert len(reader.tensors) == len(written) >= 2 + 6 * SMALL_LAYERS  # every weight (Phi-3's are fused: 6 a layer)
        # transformers reads GGUF as llama.cpp lays it out (it undoes the Llama rope reordering): f32 is the same model
        from transformers import AutoConfig, AutoModelForCausalLM

        gguf_file = Path(exported["gguf"])
        # (its Qwen3 reader ignores attention.key_length and assumes Qwen3's default head_dim of 128, and its Gemma
        # readers the default query_pre_attn_scalar: give it the config)
        given = kit.model_type in ("qwen3", "gemma2", "gemma3_text")
        config = {"config": AutoConfig.from_pretrained(exported["model"])} if given else {}
        reread = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, **config).eval()
        with torch.no_grad():
            torch.testing.assert_close(reread(ids).logits, load_model(exported["model"])(ids).logits, rtol=1e-4, atol=1e-4)

    # The server answers with the adapter on the family's base.
    from tuneloop.server import ServeOptions, build_app

    app, catalog = build_app(ServeOptions(models=[str(tmp_path / "sft")], base=str(folder), registry=f"sqlite:///{tmp_path / 'r.db'}",
                                          request_log="off", dashboard=False))
    try:
        with running(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
            reply = client.chat.completions.create(model="sft", messages=rows[35]["messages"][:1], max_tokens=6, temperature=0)
            assert reply.choices[0].finish_reason in ("stop", "length") and reply.usage.completion_tokens >= 1
    finally:
        catalog.close()

    # DPO on preference pairs made from the same rows.
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:], "rejected": [{"role": "assistant", "content": "no idea"}]}
             for r in rows]
    write_jsonl(data / "train.jsonl", pairs[:32])
    write_jsonl(data / "val.jsonl", pairs[32:])
    dpo = train(TrainConfig(**{**SFT, "max_steps": 2, "objective": "dpo", "learning_rate": 1e-3}), ModelConfig(name=str(folder)),
                data, tmp_path / "dpo")
    assert dpo["steps"] == 2 and dpo["final_loss"] == dpo["final_loss"]  # finite


SMALL_LAYERS = 2


def test_an_untested_family_warns_and_gets_every_linear_layer(caplog):
    from transformers import GraniteConfig, GraniteForCausalLM

    with torch.device("meta"):
        model = GraniteForCausalLM(GraniteConfig(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                                 num_attention_heads=2))
    with caplog.at_level(logging.WARNING):
        assert family_of(model.config) is None
        assert lora_targets(model, "all-linear") == {"target_modules": "all-linear"}
    assert "not one tuneloop has tested" in caplog.text or "granite" in str(family_of.__globals__["_warned"])


def test_lora_targets_read_the_family_table():
    from transformers import MixtralConfig, MixtralForCausalLM, Phi3Config, Phi3ForCausalLM

    small = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                 num_key_value_heads=1, pad_token_id=0)
    with torch.device("meta"):
        mixtral = MixtralForCausalLM(MixtralConfig(**small, num_local_experts=4))
        phi3 = Phi3ForCausalLM(Phi3Config(**small))
    every = lora_targets(mixtral, "all-linear")
    assert every["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert every["target_parameters"] == ["experts.gate_up_proj", "experts.down_proj"] and every["exclude_modules"] == ["gate"]
    assert lora_targets(mixtral, ["q_proj", "experts"])["target_parameters"] == every["target_parameters"]
    chosen = lora_targets(mixtral, ["v_proj", "experts.down_proj"])
    assert chosen["target_modules"] == ["v_proj"] and chosen["target_parameters"] == ["experts.down_proj"]
    assert "target_parameters" not in lora_targets(mixtral, ["q_proj"])  # attention only
    assert lora_targets(phi3, "all-linear") == {"target_modules": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]}
