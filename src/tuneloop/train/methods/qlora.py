"""QLoRA (Dettmers et al. 2023): LoRA adapters on a 4-bit NF4 base through bitsandbytes (CUDA only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from peft import prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM

from tuneloop.config import TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.train.methods.base import Placement, adapter_params, linear_params
from tuneloop.train.methods.lora import attach_lora


class QLora:
    name, adapter = "qlora", True

    def check(self, cuda: bool) -> None:
        if not cuda:
            raise TuneloopError(
                "train.method 'qlora' needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none. "
                "Use train.method 'lora' (same adapters, unquantised base) on CPU."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TuneloopError("train.method 'qlora' needs bitsandbytes: pip install bitsandbytes")

    def load_base(self, source: Path, cfg: TrainConfig, where: Placement) -> torch.nn.Module:
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if where.bf16 else torch.float32,
        )
        model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, device_map={"": where.device})
        # Norms and the head in fp32, input grads enabled: what peft needs to train on a k-bit base.
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    def wrap(self, model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
        return attach_lora(model, cfg)

    def trainable(self, model: torch.nn.Module, cfg: TrainConfig) -> int:
        return adapter_params(model, cfg)

    def memory(self, model: torch.nn.Module, cfg: TrainConfig, act_bytes: int) -> tuple[float, float]:
        params, linear = sum(p.numel() for p in model.parameters()), linear_params(model)
        # 4-bit linear weights (+ scales), embeddings and norms in 16 bits
        return linear * 0.55 + (params - linear) * 2, self.trainable(model, cfg) * (4 + 8 + 4)


METHODS = [QLora()]
