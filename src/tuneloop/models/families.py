"""Model families: what tuneloop knows about each architecture it has been tested on, in one table.

A family is picked by the model's `config.json` `model_type`. Its row says which layers LoRA adapts
when `train.lora.target_modules` is "all-linear" (for mixture-of-experts models the fused expert
weights too, through peft's `target_parameters`, and never the router, so routing stays stable), the
tokens that end an assistant turn and pad a batch when the tokenizer does not say, and the llama.cpp
architecture the GGUF exporter writes for it (None: not written yet).

What a chat template does is read from the template itself (models/chat.py, `traits`), not assumed
from the family: which token ends an assistant turn (what training must teach and decoding stops at), and
whether a system message survives rendering prefix by prefix (Gemma 2 refuses a system role; Mistral's
v0.3 template moves it into the *last* user turn). When it does not, the system text is folded into the
first user turn, as Gemma 3's own template does.

A model whose family is not in the table still trains, with a warning that says what was guessed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
_EXPERTS = ("experts.gate_up_proj", "experts.down_proj")  # transformers 5 stores each layer's experts as 3-D tensors


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    lora_modules: tuple[str, ...] = _ATTENTION + _MLP  # nn.Linear names "all-linear" adapts
    experts: tuple[str, ...] = ()  # fused expert parameters "all-linear" also adapts (MoE)
    routers: tuple[str, ...] = ()  # router modules that stay frozen
    end_of_turn: tuple[str, ...] = ()  # end-of-turn tokens its templates use, in the order to try
    pad: tuple[str, ...] = ()  # pad tokens to use when the tokenizer has none (else its end-of-sequence token)
    gguf_arch: str | None = None  # llama.cpp architecture name the exporter writes
    notes: str = field(default="", compare=False)

    @property
    def moe(self) -> bool:
        return bool(self.experts)


FAMILIES: tuple[Family, ...] = (
    Family("Llama 2/3, CodeLlama, SmolLM", ("llama",), end_of_turn=("<|eot_id|>", "<|im_end|>", "</s>"),
           pad=("<|finetune_right_pad_id|>",), gguf_arch="llama"),
    Family("Mistral", ("mistral",), end_of_turn=("</s>",), gguf_arch="llama"),
    Family("Qwen2 / Qwen2.5", ("qwen2",), end_of_turn=("<|im_end|>",), pad=("<|endoftext|>",), gguf_arch="qwen2"),
    Family("Qwen3", ("qwen3",), end_of_turn=("<|im_end|>",), pad=("<|endoftext|>",), gguf_arch="qwen3"),
    Family("Gemma 2", ("gemma2",), end_of_turn=("<end_of_turn>",), pad=("<pad>",), gguf_arch="gemma2",
           notes="soft-capped attention: batches stay padded"),
    Family("Gemma 3", ("gemma3_text", "gemma3"), end_of_turn=("<end_of_turn>",), pad=("<pad>",), gguf_arch="gemma3"),
    Family("Phi-3", ("phi3",), lora_modules=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"), end_of_turn=("<|end|>",),
           pad=("<|endoftext|>",), gguf_arch="phi3"),
    Family("Mixtral", ("mixtral",), lora_modules=_ATTENTION, experts=_EXPERTS, routers=("gate",), end_of_turn=("</s>",)),
    Family("Qwen2-MoE", ("qwen2_moe",), experts=_EXPERTS, routers=("gate", "shared_expert_gate"), end_of_turn=("<|im_end|>",),
           pad=("<|endoftext|>",), notes="the shared expert is a plain MLP: adapted as one"),
    Family("Qwen3-MoE", ("qwen3_moe",), lora_modules=_ATTENTION, experts=_EXPERTS, routers=("gate",), end_of_turn=("<|im_end|>",),
           pad=("<|endoftext|>",)),
)
_BY_TYPE = {model_type: family for family in FAMILIES for model_type in family.model_types}
_warned: set[str] = set()


def family_of(config) -> Family | None:
    """The family of a transformers config (or a config.json dict); None for one tuneloop has not tested."""
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    family = _BY_TYPE.get(str(model_type))
    if family is None and model_type not in _warned:
        _warned.add(model_type)
        log.warning("model type '%s' is not one tuneloop has tested (tested: %s); LoRA targets every linear layer, "
                    "the end-of-turn token is read from the chat template: check the data report's rendered example",
                    model_type, ", ".join(sorted(_BY_TYPE)))
    return family


def lora_targets(model, target_modules: str | list[str]) -> dict:
    """peft LoraConfig arguments for `model` and `train.lora.target_modules`.

    "all-linear" means the family's attention and MLP layers plus, for MoE models, every expert's weights;
    a list names layers, and names of expert parameters in it (`experts`, or `experts.down_proj`...) adapt those.
    The router is never adapted: its choices are what the experts were trained under."""
    family = family_of(model.config)
    if family is None:
        return {"target_modules": target_modules}
    if target_modules == "all-linear":
        modules, experts = list(family.lora_modules), list(family.experts)
    else:
        wanted = [target_modules] if isinstance(target_modules, str) else list(target_modules)
        experts = [p for p in family.experts if "experts" in wanted or p in wanted]
        modules = [m for m in wanted if m != "experts" and m not in family.experts]
    args: dict = {"target_modules": modules}
    if experts:
        args["target_parameters"] = experts
    if family.routers:
        args["exclude_modules"] = list(family.routers)
    return args
