"""GPU paths: QLoRA on a 4-bit NF4 base, bf16 mixed precision for LoRA, DoRA and full fine-tuning.

Skipped without CUDA (CI has none); run on a GPU machine with `pytest tests/train/test_gpu.py`.
"""

import pytest
import torch

from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.train.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def _fresh_peak():
    torch.cuda.reset_peak_memory_stats()


@pytest.mark.parametrize("method", ["lora", "dora", "full"])
def test_bf16_training_learns_like_fp32_on_the_gpu(tmp_path, data_dir, tiny_model_dir, method):
    assert torch.cuda.is_bf16_supported()
    runs = {}
    for precision in ("auto", "fp32"):
        cfg = TrainConfig(method=method, precision=precision, max_steps=15, batch_size=8, eval_every=5,
                          learning_rate=3e-3 if method != "full" else 5e-4, lora={"r": 8, "dropout": 0.0})
        runs[precision] = train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / precision)
    bf16, fp32 = runs["auto"], runs["fp32"]
    assert bf16["precision"] == "bf16" and fp32["precision"] == "fp32" and bf16["device"].startswith("cuda")
    assert bf16["final_loss"] < bf16["first_loss"]
    assert bf16["final_loss"] == pytest.approx(fp32["final_loss"], rel=0.02)  # mixed precision, same learning


def test_qlora_trains_adapters_on_a_4bit_base(tmp_path, data_dir, tiny_model_dir):
    import bitsandbytes as bnb
    from peft import PeftModel

    from tuneloop.train.methods import build_model, placement

    cfg = TrainConfig(method="qlora", max_steps=15, batch_size=8, learning_rate=1e-2, eval_every=5, lora={"r": 8, "dropout": 0.0})
    model = build_model(ModelConfig(name=str(tiny_model_dir)), cfg, placement(cfg))
    four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit and all(m.weight.quant_type == "nf4" for m in four_bit)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)

    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), data_dir, tmp_path / "run")
    assert summary["final_loss"] < summary["first_loss"] - 0.2
    adapter = tmp_path / "run" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    # The adapter is an ordinary PEFT folder: it loads onto the unquantised base too.
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(adapter))


def test_dpo_on_the_gpu(tmp_path, tiny_model_dir):
    from tests.conftest import ticket_rows, write_jsonl

    rows = ticket_rows(32)
    pairs = [{"prompt": r["messages"][:1], "chosen": r["messages"][1:],
              "rejected": [{"role": "assistant", "content": rows[(i + 1) % 32]["messages"][1]["content"]}]} for i, r in enumerate(rows)]
    write_jsonl(tmp_path / "train.jsonl", pairs)
    cfg = TrainConfig(objective="dpo", max_steps=12, batch_size=8, learning_rate=5e-3, dpo={"beta": 0.5}, lora={"dropout": 0.0})
    summary = train(cfg, ModelConfig(name=str(tiny_model_dir)), tmp_path, tmp_path / "run")
    assert summary["final_loss"] < 0.6 and summary["reward_accuracy"] > 0.7
