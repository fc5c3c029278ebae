"""Checkpoints that resume exactly: weights, optimizer, scheduler, RNG and position in the data.

Weights are the PEFT adapter folder for adapter methods, or `model.safetensors` for full fine-tuning;
the rest of the state is safetensors plus JSON (state.py), so loading a checkpoint never unpickles.

A checkpoint is written to a hidden temporary folder and renamed into place when complete, so a run
killed mid-write never leaves a folder that resume would pick. The last `keep_last` checkpoints are
kept, plus the best one by validation loss (its step is recorded in `best.json`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from peft import PeftModel, set_peft_model_state_dict
from safetensors.torch import load_file, load_model, save_model

from tuneloop.artifacts import normal_modes
from tuneloop.layout import Checkpoint, Checkpoints
from tuneloop.train.state import load_state, save_state


def save_checkpoint(root: Path, step: int, model, optimizer, scheduler, records: list[dict]) -> Path:
    """Write the checkpoint of `step` under `root` (a run's checkpoints folder); returns its folder."""
    root.mkdir(parents=True, exist_ok=True)
    final, tmp = Checkpoints(root).at(step), Checkpoints(root).temporary(step)
    shutil.rmtree(tmp.path, ignore_errors=True)
    save_weights(model, tmp.weights)
    save_state(tmp.state, tmp.tensors, step=step, optimizer=optimizer, scheduler=scheduler, records=records)
    normal_modes(tmp.path)  # safetensors writes 0600; the run folder's other files follow the umask
    shutil.rmtree(final.path, ignore_errors=True)  # a re-run of the same step replaces it whole
    os.replace(tmp.path, final.path)
    return final.path


def latest_checkpoint(root: Path) -> Path | None:
    done = Checkpoints(root).complete()
    return done[-1].path if done else None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore everything a checkpoint holds; returns (step, metric records so far)."""
    checkpoint = Checkpoint(path)
    load_weights(model, checkpoint.weights)
    return load_state(checkpoint.state, checkpoint.tensors, optimizer, scheduler)


def legacy_checkpoints(root: Path) -> list[Path]:
    """Checkpoints an older tuneloop wrote with a pickled state (never loaded: a pickle can run code)."""
    return [c.path for c in Checkpoints(root).all() if c.legacy_state.is_file() and not c.state.is_file()]


def save_weights(model, folder: Path) -> None:
    if isinstance(model, PeftModel):
        model.save_pretrained(folder)
    else:  # save_model handles tied tensors (embeddings shared with the output head)
        folder.mkdir(parents=True, exist_ok=True)
        save_model(model, str(folder / "model.safetensors"))


def load_weights(model, folder: Path) -> None:
    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors", device=str(model.device)))
    else:
        load_model(model, str(folder / "model.safetensors"), device=str(model.device))


def mark_best(root: Path, step: int, key: str, value: float) -> None:
    """Record which checkpoint is best and by which validation number (`train.selection`)."""
    Checkpoints(root).best_marker.write_text(json.dumps({"step": step, key: value}))


def best_checkpoint(root: Path) -> Path | None:
    marker = Checkpoints(root).best_marker
    if not marker.is_file():
        return None
    path = Checkpoints(root).at(json.loads(marker.read_text())["step"]).path
    return path if path.is_dir() else None


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the last `keep_last` checkpoints and the best one."""
    best = best_checkpoint(root)
    done = [c.path for c in Checkpoints(root).all()]
    for path in done[:-keep_last] if keep_last else done:
        if path != best:
            shutil.rmtree(path)
