"""Training methods: which weights train and how the base is loaded (LoRA, DoRA, QLoRA, full), one file each.

Every module of this package lists its methods in `METHODS` (see base.Method); they are collected here
by name, so a new method is one new file (plus its name in config.TrainConfig.method; a test checks that
the two agree). Also decides device and precision: bf16 mixed precision on a GPU that supports it,
fp32 elsewhere.
"""

from __future__ import annotations

import importlib
import pkgutil

import torch

from tuneloop.compat import enable_activation_checkpointing
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.models.resolve import resolve_model
from tuneloop.train.methods.base import Method, Placement


def methods() -> dict[str, Method]:
    """Every method of this package's modules, by name."""
    found: dict[str, Method] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            for method in getattr(importlib.import_module(f"{__name__}.{module.name}"), "METHODS", []):
                found[method.name] = method
    return found


def method_for(cfg: TrainConfig) -> Method:
    known = methods()
    if cfg.method not in known:
        raise TuneloopError(f"train.method '{cfg.method}' is not a training method here (known: {', '.join(sorted(known))})")
    return known[cfg.method]


def placement(cfg: TrainConfig, local_rank: int = 0) -> Placement:
    """Where and in what precision to train; fails up front when the method needs what is missing."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    method_for(cfg).check(cuda)
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if cfg.precision == "bf16" and not bf16_ok:
        raise TuneloopError("train.precision 'bf16' needs a GPU with bf16 support; use 'auto' or 'fp32' here")
    return Placement(device, bf16=cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_ok))


def build_model(model_cfg: ModelConfig, cfg: TrainConfig, where: Placement):
    """Load the base and make the configured part of it trainable; returns the model in train mode."""
    method = method_for(cfg)
    model = method.load_base(resolve_model(model_cfg.name), cfg, where)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model = method.wrap(model, cfg)
    model.config.use_cache = False
    return model.train()


def shallow_model(model_cfg: ModelConfig, cfg: TrainConfig, where: Placement, layers: int):
    """The configured model cut to its first `layers` decoder layers, with random weights (nothing is loaded):
    what `--dry-run` times to estimate a run from a few layers. A 4-bit base is timed as its LoRA equivalent."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(resolve_model(model_cfg.name))
    config.num_hidden_layers = layers
    if isinstance(getattr(config, "layer_types", None), list):  # per-layer attention kinds (sliding windows)
        config.layer_types = config.layer_types[:layers]
    method = method_for(cfg)
    dtype = torch.bfloat16 if where.bf16 and method.adapter else torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(where.device)
    if cfg.gradient_checkpointing:
        enable_activation_checkpointing(model)
    model = (methods()["lora"] if method.name == "qlora" else method).wrap(model, cfg)
    model.config.use_cache = False
    return model.train()


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
