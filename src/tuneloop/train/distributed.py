"""Data parallelism across processes started by `torchrun` or `accelerate launch`.

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; we join the process group from
those (gloo on CPU, nccl on GPUs). Each rank takes every world_size-th micro-batch of the same
seeded stream, and after the backward passes of a step the gradients are summed across ranks. Each
rank divides its loss by the answer-token count of the *global* step, so the summed gradient is
exactly the gradient of one large batch (the same invariant as gradient accumulation). Rank 0
alone writes files. With `train.distributed: fsdp` the same ranks shard the model instead (fsdp.py):
FSDP reduce-scatters the gradients itself, so `sum_gradients` is not used, and every rank writes its
own shards of a checkpoint (sharded.py).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


class World:
    def __init__(self):
        self.size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if self.size > 1 and not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl" if cuda else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, value: float, device: torch.device) -> float:
        """Sum a number over all ranks (every rank gets the total)."""
        if self.size == 1:
            return value
        total = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return float(total.item())

    def sum_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """One flat all-reduce for all trainable gradients (few, small tensors for adapters)."""
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(params, grads):
            p.grad = flat[offset : offset + g.numel()].view_as(g)
            offset += g.numel()

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def close(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()
