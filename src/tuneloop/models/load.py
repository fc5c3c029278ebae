"""Load tokenizers and causal LMs (optionally with a PEFT adapter) from a resolved reference."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tuneloop import threads
from tuneloop.errors import TuneloopError
from tuneloop.layout import TrainDir
from tuneloop.models.chat import traits
from tuneloop.models.families import family_of
from tuneloop.models.resolve import resolve_model

log = logging.getLogger(__name__)


def load_tokenizer(ref: str | Path) -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (its family's, else end-of-sequence) and a checked chat template."""
    source = resolve_model(ref)
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.chat_template is None:
        raise TuneloopError(f"model '{ref}' has no chat template; tuneloop trains chat models")
    family = _family(source)
    if tokenizer.pad_token is None:
        vocab = tokenizer.get_vocab()
        tokenizer.pad_token = next((t for t in (family.pad if family else ()) if t in vocab), tokenizer.eos_token)
    end = traits(tokenizer).end_of_turn
    if family and family.end_of_turn and end not in family.end_of_turn:
        log.warning("model '%s': its chat template ends a turn with %r, not %s as %s templates do; training teaches %r",
                    ref, end, " or ".join(family.end_of_turn), family.name, end)
    return tokenizer


def _family(source: str):
    """The family of a local model folder (None for a hub id or an untested family, which warns)."""
    config = Path(source) / "config.json"
    if not config.is_file():
        return None
    return family_of(json.loads(config.read_text()))


def trained_weights(train_dir: Path) -> Path:
    """What a train run produced: its PEFT adapter folder, or its full model folder (a hosted fine-tune has no
    weights here: its folder itself, whose remote.json names the model at the provider)."""
    run = TrainDir(Path(train_dir))
    if run.remote.is_file():
        return run.root
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
