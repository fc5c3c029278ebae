"""The trainable model for each method: LoRA, DoRA, QLoRA (4-bit NF4 base) or full fine-tuning.

Also decides device and precision: bf16 mixed precision on a GPU that supports it, fp32 elsewhere.
For the adapter methods the frozen base is loaded in the compute dtype (half the memory in bf16)
while peft keeps the adapter weights in fp32; full fine-tuning keeps fp32 master weights and runs
the forward pass under autocast.
"""

from __future__ import annotations

import importlib.util
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForCausalLM

from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.models.resolve import resolve_model
from tuneloop.train.fast_lora import use_fast_lora

ADAPTER_METHODS = ("lora", "dora", "qlora")


@dataclass(frozen=True)
class Placement:
    device: torch.device
    bf16: bool

    def autocast(self):
        """Mixed-precision context for forward passes (a no-op in fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()


def placement(cfg: TrainConfig, local_rank: int = 0) -> Placement:
    """Where and in what precision to train; fails up front when the method needs what is missing."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cfg.method == "qlora":
        if not cuda:
            raise TuneloopError(
                "train.method 'qlora' needs a CUDA GPU (bitsandbytes 4-bit kernels); this machine has none. "
                "Use train.method 'lora' (same adapters, unquantised base) on CPU."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise TuneloopError("train.method 'qlora' needs bitsandbytes: pip install bitsandbytes")
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if cfg.precision == "bf16" and not bf16_ok:
        raise TuneloopError("train.precision 'bf16' needs a GPU with bf16 support; use 'auto' or 'fp32' here")
    return Placement(device, bf16=cfg.precision == "bf16" or (cfg.precision == "auto" and bf16_ok))


def build_model(model_cfg: ModelConfig, cfg: TrainConfig, where: Placement):
    """Load the base and make the configured part of it trainable; returns the model in train mode."""
    source = resolve_model(model_cfg.name)
    if cfg.method == "full":
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(where.device)
    elif cfg.method == "qlora":
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if where.bf16 else torch.float32,
        )
        model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, device_map={"": where.device})
        # Norms and the head in fp32, input grads enabled: what peft needs to train on a k-bit base.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        dtype = torch.bfloat16 if where.bf16 else torch.float32
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(where.device)
    if cfg.gradient_checkpointing:
        _enable_activation_checkpointing(model)
    if cfg.method in ADAPTER_METHODS:
        model = get_peft_model(model, PeftLoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, use_dora=cfg.method == "dora", task_type="CAUSAL_LM",
        ))
        if cfg.fast_kernels:
            use_fast_lora(model)
    model.config.use_cache = False
    return model.train()


def trainable_parameters(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _enable_activation_checkpointing(model) -> None:
    """Recompute each decoder layer in the backward pass (the one version shim: transformers renamed it)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.enable_input_require_grads()
