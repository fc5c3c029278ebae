"""Load tokenizers and causal LMs (optionally with a PEFT adapter) from a resolved reference."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tuneloop.errors import TuneloopError
from tuneloop.models.resolve import resolve_model


def load_tokenizer(ref: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ref))
    if tokenizer.chat_template is None:
        raise TuneloopError(f"model '{ref}' has no chat template; tuneloop trains chat models")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(ref: str | Path, adapter: Path | None = None, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The base model in eval mode, with the adapter attached (not merged) when one is given."""
    model = AutoModelForCausalLM.from_pretrained(resolve_model(ref), dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise TuneloopError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()
