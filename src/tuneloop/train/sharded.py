"""Sharded checkpoints (`train.distributed: fsdp`): each rank writes and reads back only its own slices.

Gathering a large model to one rank at every checkpoint would cost the memory FSDP saves, so each rank
writes its slice of every trainable tensor (`DTensor.to_local()`) to its own safetensors file, with a
JSON index of each tensor's full shape and the slice's offset along the sharded (first) dimension, and
its own training state (its slices of the AdamW moments, its random number generators; state.py).
Rank 0 writes `state.json` last: step, world size and the metric records, the mark of a complete
checkpoint. Safetensors and JSON only, never torch.distributed.checkpoint's format (its metadata is a
pickle), so nothing in a run folder is ever unpickled.

Written like the unsharded checkpoints (checkpoint.py): into a hidden temporary folder, renamed into
place by rank 0 once every rank has written, so a run killed mid-write leaves nothing resume would pick.
A checkpoint resumes only with the world size that wrote it: the slices are cut for that many ranks.
The ranks must share the run folder's file system (one node, or a shared disk across nodes).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from tuneloop.errors import TuneloopError
from tuneloop.layout import Checkpoint, Checkpoints
from tuneloop.train.fsdp import resharded
from tuneloop.train.state import load_state, save_state

FORMAT = 1


def is_sharded(path: Path) -> bool:
    return Checkpoint(path).shards.is_dir()


def check_resumable(path: Path, world, sharded: bool) -> None:
    """A clear TuneloopError unless this run can resume `path`: sharded checkpoints with the same world size
    and train.distributed fsdp, whole ones otherwise."""
    if sharded or is_sharded(path):
        _check_world(path, world if sharded else _One())


def save_sharded(root: Path, step: int, model, optimizer, scheduler, records: list[dict], world) -> Path:
    """Every rank: write this rank's part of the checkpoint of `step` under `root`; returns its folder."""
    final, tmp = Checkpoints(root).at(step), Checkpoints(root).temporary(step)
    if world.main:
        shutil.rmtree(tmp.path, ignore_errors=True)
        tmp.shards.mkdir(parents=True)
    world.barrier()  # the folder exists (and no rank writes into one that is being cleared)
    shard = tmp.shard(world.rank)
    slices, index = {}, {}
    for name, param in resharded(model).named_parameters():
        if param.requires_grad:
            local = param.to_local() if isinstance(param, DTensor) else param
            slices[name] = local.detach().to("cpu").contiguous()
            index[name] = {"shape": list(param.shape), "offset": _offset(param.shape, world)}
    save_file(slices, str(shard.weights))
    shard.index.write_text(json.dumps({"format": FORMAT, "world_size": world.size, "rank": world.rank, "tensors": index}))
    save_state(shard.state, shard.tensors, step=step, optimizer=optimizer, scheduler=scheduler, records=records)
    world.barrier()  # every rank's files are complete
    if world.main:
        tmp.state.write_text(json.dumps({"format": FORMAT, "step": step, "world_size": world.size, "records": records}))
        shutil.rmtree(final.path, ignore_errors=True)
        os.replace(tmp.path, final.path)
    world.barrier()  # renamed before any rank goes on (the next save clears the temporary name again)
    return final.path


def load_sharded(path: Path, model, optimizer, scheduler, world) -> tuple[int, list[dict]]:
    """Every rank: restore its slices of the weights, its optimizer state and generators; (step, records)."""
    _check_world(path, world)
    load_sharded_weights(path, model, world)
    shard = Checkpoint(path).shard(world.rank)
    return load_state(shard.state, shard.tensors, optimizer, scheduler)


def load_sharded_weights(path: Path, model, world) -> None:
    """Every rank: copy its saved slices into the model's shards (early stopping's best checkpoint, resume)."""
    _check_world(path, world)
    shard = Checkpoint(path).shard(world.rank)
    try:
        index = json.loads(shard.index.read_text())["tensors"]
        slices = load_file(str(shard.weights))
    except Exception as err:  # whatever a damaged or missing file makes json or safetensors raise
        raise TuneloopError(f"{shard.weights}: unreadable shard ({err}); resume from an earlier checkpoint") from None
    params = {name: p for name, p in resharded(model).named_parameters() if p.requires_grad}
    if set(params) != set(index):
        raise TuneloopError(f"{path}: its shards hold other tensors than this run trains (was it written with other settings?)")
    with torch.no_grad():
        for name, param in params.items():
            local = param.to_local() if isinstance(param, DTensor) else param
            saved = slices[name]
            if index[name]["shape"] != list(param.shape) or saved.shape != local.shape:
                raise TuneloopError(f"{path}: {name} has shape {index[name]['shape']} there, {list(param.shape)} in this run")
            local.copy_(saved)


class _One:
    """A run that is not sharded, as far as a sharded checkpoint is concerned."""

    size = 1


def _check_world(path: Path, world) -> None:
    if not is_sharded(path):
        raise TuneloopError(f"{path} was written whole (one process, or train.distributed ddp): resume it the same way, "
                            f"not with train.distributed fsdp")
    try:
        written_by = json.loads(Checkpoint(path).state.read_text())["world_size"]
    except Exception as err:
        raise TuneloopError(f"{path}: unreadable checkpoint state ({err}); resume from an earlier checkpoint") from None
    if written_by != world.size or isinstance(world, _One):
        raise TuneloopError(f"{path} was written sharded across {written_by} ranks and this run has "
                            f"{'one unsharded process' if isinstance(world, _One) else world.size}: a sharded checkpoint "
                            f"resumes with train.distributed fsdp and the same number of processes "
                            f"(torchrun --nnodes x --nproc_per_node = {written_by})")


def _offset(shape: torch.Size, world) -> int:
    """Where this rank's slice starts along dim 0: FSDP2 cuts like torch.chunk (ceil-sized pieces, the last ones
    shorter or empty)."""
    return min(world.rank * math.ceil(shape[0] / world.size), shape[0]) if len(shape) else 0
