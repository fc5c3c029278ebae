"""Training state without pickle: every tensor in a safetensors file, everything else in JSON.

A checkpoint's state is the optimizer's moments and step counts, the scheduler, every random number
generator and the metric records so far. torch.save would pickle it, and loading a pickle runs whatever
code it names: a run folder copied from another machine (or a job folder on a shared disk) must never be
able to do that under `tuneloop train --resume`. So tensors go to `state.safetensors` (which holds only
named arrays) and the rest to `state.json`; loading either can fail, but never execute anything.
Under FSDP every rank writes its own (layout.Shard): its slices of the moments, its own generators.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.distributed.tensor import DTensor

from tuneloop.errors import TuneloopError

FORMAT = 1


def save_state(json_path: Path, tensors_path: Path, *, step: int, optimizer, scheduler, records: list[dict]) -> None:
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors |= {f"rng.cuda.{i}": state for i, state in enumerate(torch.cuda.get_rng_state_all())}
    opt = optimizer.state_dict()
    plain_state: dict[str, dict[str, Any]] = {}
    for index, values in opt["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{index}.{name}"] = _local(value).detach().to("cpu").contiguous()
            else:
                plain_state.setdefault(str(index), {})[name] = value
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    document = {
        "format": FORMAT, "step": step, "records": records, "scheduler": scheduler.state_dict(),
        "optimizer": {"param_groups": opt["param_groups"], "state": plain_state, "indices": sorted(opt["state"])},
        "rng": {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]},
    }
    save_file(tensors, str(tensors_path))
    json_path.write_text(json.dumps(document, default=_plain))


def load_state(json_path: Path, tensors_path: Path, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Restore optimizer, scheduler and RNG from a saved state; returns (step, records)."""
    try:
        document = json.loads(json_path.read_text())
        tensors = load_file(str(tensors_path))
    except Exception as err:  # whatever a damaged or foreign file makes json or safetensors raise
        raise TuneloopError(f"{json_path.parent}: unreadable checkpoint state ({err}); resume from an earlier checkpoint") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TuneloopError(f"{json_path}: not a checkpoint state this tuneloop writes (format {FORMAT})")
    try:
        plain = document["optimizer"]["state"]
        state = {}
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for index in document["optimizer"]["indices"]:
            prefix = f"optimizer.{index}."
            values = {key.removeprefix(prefix): _like(t, params[index]) for key, t in tensors.items() if key.startswith(prefix)}
            state[index] = values | plain.get(str(index), {})
        optimizer.load_state_dict({"state": state, "param_groups": document["optimizer"]["param_groups"]})
        scheduler.load_state_dict(document["scheduler"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[f"rng.cuda.{i}"] for i in range(sum(k.startswith("rng.cuda.") for k in tensors))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        version, internal, gauss = document["rng"]["python"]
        random.setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = document["rng"]["numpy"]
        np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        return int(document["step"]), list(document["records"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise TuneloopError(f"{json_path.parent}: checkpoint state does not fit this run ({err.__class__.__name__}: {err}); "
                            f"was it written with other settings?") from None


def _local(value: torch.Tensor) -> torch.Tensor:
    """This rank's slice of a tensor FSDP shards (a DTensor); any other tensor as it is."""
    return value.to_local() if isinstance(value, DTensor) else value


def _like(value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A saved slice of a moment as the sharded tensor its parameter is (under FSDP), so that AdamW meets
    DTensors on both sides; scalars (the step count) and unsharded runs' tensors stay as they are."""
    if isinstance(param, DTensor) and value.ndim and value.shape == param.to_local().shape:
        return DTensor.from_local(value.to(param.device), param.device_mesh, param.placements, shape=param.shape, stride=param.stride())
    return value


def _plain(value: Any) -> Any:
    """numpy scalars as JSON numbers; anything else that JSON cannot hold is an error, never a pickle."""
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"checkpoint state: cannot store a {type(value).__name__} as JSON")
