"""What every training method provides (the `Method` protocol), where training runs (`Placement`), and the
parameter counts the methods' memory terms use."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from tuneloop.config import TrainConfig


@dataclass(frozen=True)
class Placement:
    device: torch.device
    bf16: bool

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()


class Method(Protocol):
    name: str  # the value of train.method
    adapter: bool  # trains a PEFT adapter on a frozen base (else every weight: a full model folder)

    def check(self, cuda: bool) -> None:
        """Raise TuneloopError, saying what to do, when this machine cannot run the method."""

    def load_base(self, source: Path, cfg: TrainConfig, where: Placement) -> torch.nn.Module:
        """The base model on `where.device`, in the method's precision."""

    def wrap(self, model: torch.nn.Module, cfg: TrainConfig) -> torch.nn.Module:
        """The model with the trainable part made trainable (adapters attached, for the adapter methods)."""

    def trainable(self, model: torch.nn.Module, cfg: TrainConfig) -> int:
        """Trainable parameters of `model` (a meta-device copy of the base) under this method."""

    def memory(self, model: torch.nn.Module, cfg: TrainConfig, act_bytes: int) -> tuple[float, float]:
        """(weights, gradients + optimizer state) in bytes, for the pre-flight estimate."""


def linear_params(model: torch.nn.Module) -> int:
    """Weights of every linear layer but the output head."""
    head = model.get_output_embeddings()
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)


def adapter_params(model: torch.nn.Module, cfg: TrainConfig, dora: bool = False) -> int:
    """LoRA A and B for every targeted linear layer (+ one magnitude vector each for DoRA), and for MoE models
    rank r per expert on each targeted expert weight (peft's ParamWrapper: A is (r x experts, in), B (out, r x experts))."""
    from tuneloop.models.families import lora_targets

    head = model.get_output_embeddings()
    chosen = lora_targets(model, cfg.lora.target_modules)
    targets, experts, excluded = chosen["target_modules"], chosen.get("target_parameters", []), chosen.get("exclude_modules") or []
    total = 0
    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if not isinstance(module, torch.nn.Linear) or module is head or short in excluded:
            continue
        if targets != "all-linear" and short not in targets:
            continue
        total += cfg.lora.r * (module.in_features + module.out_features)
        total += module.out_features if dora else 0
    for name, param in model.named_parameters():
        if param.ndim == 3 and any(name.endswith(p) for p in experts):
            n_experts, out_features, in_features = param.shape
            total += cfg.lora.r * n_experts * (in_features + out_features)
    return total
