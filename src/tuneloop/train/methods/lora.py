"""LoRA (Hu et al. 2021) and DoRA (Liu et al. 2024): low-rank adapters on a frozen base, through peft.

The frozen base is loaded in the compute dtype (half the memory in bf16) while peft keeps the adapter
weights in fp32. Plain LoRA layers train through our fused layer (train/fast_lora.py) unless
`train.fast_kernels` is off.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import AutoModelForCausalLM

from tuneloop.config import TrainConfig
from tuneloop.models.families import lora_targets
from tuneloop.train.fast_lora import use_fast_lora
from tuneloop.train.methods.base import Placement, adapter_params, linear_params


class Lora:
    adapter = True

    def __init__(self, name: str, dora: bool):
        self.name, self.dora = name, dora

    def check(self, cuda: bool) -> None:
        return None

    def load_base(self, source: Path, cfg: TrainConfig, where: Placement) -> torch.nn.Module:
        dtype = torch.bfloat16 if where.bf16 else torch.float32
        return AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(where.device)

    def wrap(self, model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
        return attach_lora(model, cfg, dora=self.dora)

    def trainable(self, model: torch.nn.Module, cfg: TrainConfig) -> int:
        return adapter_params(model, cfg, dora=self.dora)

    def memory(self, model: torch.nn.Module, cfg: TrainConfig, act_bytes: int) -> tuple[float, float]:
        params = sum(p.numel() for p in model.parameters())
        state = self.trainable(model, cfg) * (4 + 8 + 4)  # gradients + AdamW moments + fp32 adapter weights
        if self.dora:  # DoRA recomputes each adapted weight's norm: weight-sized temporaries kept for backward
            state += linear_params(model) * 4 * act_bytes
        return params * act_bytes, state


def attach_lora(model: torch.nn.Module, cfg: TrainConfig, dora: bool = False) -> torch.nn.Module:
    """peft's LoRA (or DoRA) on `cfg.lora`'s target modules (as the model's family reads them: MoE experts
    included, routers never; models/families.py); the fused training layer where it applies."""
    model = get_peft_model(model, PeftLoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        use_dora=dora, task_type="CAUSAL_LM", **lora_targets(model, cfg.lora.target_modules),
    ))
    if cfg.fast_kernels:
        use_fast_lora(model)
    return model


METHODS = [Lora("lora", dora=False), Lora("dora", dora=True)]
