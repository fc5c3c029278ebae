"""Full fine-tuning: every weight trains, fp32 master weights, the forward pass under autocast on GPUs.
Use a learning rate around 1e-5..1e-4."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tuneloop.config import TrainConfig
from tuneloop.train.methods.base import Placement


class Full:
    name, adapter = "full", False

    def check(self, cuda: bool) -> None:
        return None

    def load_base(self, source: Path, cfg: TrainConfig, where: Placement) -> torch.nn.Module:
        return AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(where.device)

    def wrap(self, model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
        return model

    def trainable(self, model: torch.nn.Module, cfg: TrainConfig) -> int:
        return sum(p.numel() for p in model.parameters())

    def memory(self, model: torch.nn.Module, cfg: TrainConfig, act_bytes: int) -> tuple[float, float]:
        params = self.trainable(model, cfg)
        return params * 4, params * (4 + 8)  # fp32 weights; gradients + AdamW moments


METHODS = [Full()]
