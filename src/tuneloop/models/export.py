"""`tuneloop export`: turn a train run into a plain model folder (LoRA merged into the base) and a GGUF file.

The merged folder is what `save_pretrained` writes (config.json, safetensors, tokenizer, chat
template): transformers, vLLM and any other tool load it with no peft. A LoRA/DoRA adapter is
merged into an fp32 copy of the base (also for QLoRA runs: merging into 4-bit weights would round
the update away). A full fine-tuning run's model folder is already plain and is copied.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer

from tuneloop.artifacts import normal_modes, read_manifest, write_manifest
from tuneloop.errors import TuneloopError
from tuneloop.layout import ExportDir, TrainDir
from tuneloop.models.chat import stop_ids
from tuneloop.models.load import load_model, load_tokenizer
from tuneloop.models.provenance import loadable_base
from tuneloop.ui import progress


def export_run(train_dir: Path, out: Path, gguf: str | None = None, ollama: bool = False) -> dict:
    """Write `out`/model (merged HF folder); with `gguf` (an outtype: f32, f16, q8_0, q4_k_m, q5_k_m) also
    `out`/model.gguf, and with `ollama` an Ollama Modelfile beside it."""
    manifest = read_manifest(train_dir)
    if manifest.get("stage") != "train":
        raise TuneloopError(f"{train_dir}: not a train run (its manifest says stage '{manifest.get('stage')}')")
    if ollama and not gguf:
        raise TuneloopError("--ollama writes a Modelfile for the GGUF file: add --gguf (q8_0, f16, q4_k_m, ...)")
    base = loadable_base(manifest["model"])
    folders = ExportDir(out)
    shutil.rmtree(folders.model, ignore_errors=True)
    adapter, full = TrainDir(train_dir).adapter, TrainDir(train_dir).model
    with progress() as bar:
        step = bar.add_task("merge" if adapter.is_dir() else "copy", total=1, info=f"{train_dir} -> {folders.model}")
        if adapter.is_dir():
            source = adapter
            merge_adapter(base, adapter, folders.model)
        elif full.is_dir():
            source = full
            shutil.copytree(full, folders.model)
        else:
            raise TuneloopError(f"{train_dir}: no {adapter.name}/ or {full.name}/ folder (did training finish?)")
        bar.update(step, advance=1)
        outputs = [folders.model]
        if gguf:
            from tuneloop.models.gguf_export import export_gguf

            outputs.append(export_gguf(folders.model, folders.gguf, outtype=gguf, bar=bar))
    normal_modes(folders.model)
    if ollama:
        outputs.append(_modelfile(folders, manifest))
    write_manifest(out, "export", {"gguf": gguf, "ollama": ollama}, inputs={"weights": source}, outputs=outputs, parent=train_dir,
                   extra={"base_model": base, "hub_id": manifest["model"].get("hub_id")})
    return {"model": str(folders.model), "gguf": str(folders.gguf) if gguf else None,
            "modelfile": str(folders.modelfile) if ollama else None}


def _modelfile(folders: ExportDir, manifest: dict) -> Path:
    from tuneloop.models.ollama import write_modelfile

    tokenizer = AutoTokenizer.from_pretrained(folders.model)
    context = json.loads((folders.model / "config.json").read_text()).get("max_position_embeddings")
    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids(tokenizer)]
    system = (manifest.get("task") or {}).get("system_prompt")
    return write_modelfile(folders.modelfile, folders.gguf, tokenizer, system, stops, context)


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
