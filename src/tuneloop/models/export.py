"""`tuneloop export`: turn a train run into a plain model folder (LoRA merged into the base) and a GGUF file.

The merged folder is what `save_pretrained` writes (config.json, safetensors, tokenizer, chat
template): transformers, vLLM and any other tool load it with no peft. A LoRA/DoRA adapter is
merged into an fp32 copy of the base (also for QLoRA runs: merging into 4-bit weights would round
the update away). A full fine-tuning run's model folder is already plain and is copied.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tuneloop.artifacts import read_manifest, write_manifest
from tuneloop.errors import TuneloopError
from tuneloop.layout import ExportDir, TrainDir
from tuneloop.models.chat import stop_ids
from tuneloop.models.load import load_model, load_tokenizer


def export_run(train_dir: Path, out: Path, gguf: str | None = None) -> dict:
    """Write `out`/model (merged HF folder) and, when `gguf` is 'f16' or 'f32', `out`/model.gguf."""
    manifest = read_manifest(train_dir)
    if manifest.get("stage") != "train":
        raise TuneloopError(f"{train_dir}: not a train run (its manifest says stage '{manifest.get('stage')}')")
    base = manifest["model"]["name"]
    target = ExportDir(out).model
    shutil.rmtree(target, ignore_errors=True)
    adapter, full = TrainDir(train_dir).adapter, TrainDir(train_dir).model
    if adapter.is_dir():
        source = adapter
        merge_adapter(base, adapter, target)
    elif full.is_dir():
        source = full
        shutil.copytree(full, target)
    else:
        raise TuneloopError(f"{train_dir}: no {adapter.name}/ or {full.name}/ folder (did training finish?)")
    outputs = [target]
    if gguf:
        from tuneloop.models.gguf_export import export_gguf

        outputs.append(export_gguf(target, ExportDir(out).gguf, outtype=gguf))
    write_manifest(out, "export", {"gguf": gguf}, inputs={"weights": source}, outputs=outputs, parent=train_dir,
                   extra={"base_model": base})
    return {"model": str(target), "gguf": str(outputs[1]) if gguf else None}


@torch.no_grad()
def merge_adapter(base: str | Path, adapter: Path, target: Path) -> Path:
    model = load_model(base, adapter=adapter, dtype=torch.float32)
    merged = model.merge_and_unload()
    # The trainer saves the tokenizer beside the adapter; older adapters fall back to the base's.
    tokenizer = AutoTokenizer.from_pretrained(adapter) if (adapter / "tokenizer_config.json").is_file() else load_tokenizer(base)
    # Generation stops at the end of a turn too (Gemma's <end_of_turn>, Phi-3's <|end|> are not their end-of-sequence
    # token), so transformers' generate and vLLM stop where tuneloop does.
    merged.generation_config.eos_token_id = stop_ids(tokenizer)
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
