"""Load tokenizers and causal LMs (optionally with a PEFT adapter) from a resolved reference."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tuneloop import threads
from tuneloop.errors import TuneloopError
from tuneloop.layout import TrainDir
from tuneloop.models.resolve import resolve_model


def load_tokenizer(ref: str | Path) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(ref))
    if tokenizer.chat_template is None:
        raise TuneloopError(f"model '{ref}' has no chat template; tuneloop trains chat models")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def trained_weights(train_dir: Path) -> Path:
    """What a train run produced: its PEFT adapter folder, or its full model folder."""
    run = TrainDir(Path(train_dir))
    weights = run.weights()
    if weights is None:
        raise TuneloopError(f"{train_dir}: no {run.adapter.name}/ or {run.model.name}/ folder; is it a finished train run?")
    return weights


def weights_folder(path: Path) -> Path:
    """A PEFT adapter or model folder as given, or what the train run at `path` produced."""
    path = Path(path)
    if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
        return path
    return trained_weights(path)


def is_full_model(weights: Path) -> bool:
    return (weights / "config.json").is_file() and not (weights / "adapter_config.json").is_file()


def load_model(ref: str | Path, adapter: Path | None = None, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """The base model in eval mode, with the adapter attached (not merged) when one is given.

    `adapter` may also be a full fine-tuning run's model folder, which then replaces the base."""
    if adapter is not None and is_full_model(Path(adapter)):
        ref, adapter = adapter, None
    threads.apply()  # as many compute threads as this process may run at once (affinity, cgroup quota)
    model = AutoModelForCausalLM.from_pretrained(resolve_model(ref), dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise TuneloopError(f"{adapter}: not a PEFT adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval()
