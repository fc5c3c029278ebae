"""Sharded data parallelism (`train.distributed: fsdp`) through torch FSDP2's `fully_shard`.

Under DDP every rank holds the whole model, its gradients and its AdamW moments. Under FSDP each rank
holds 1/world_size of each: every parameter becomes a DTensor sharded along its first dimension, a
group's full weights are all-gathered just before it computes and freed after, and its gradients are
reduce-scattered so each rank keeps the gradient of its own slice, which its AdamW updates. The loop in
trainer.py is the same; this module wraps the model and gives the loop what changes (gradient sync
around accumulation, a gathered model for validation, the full weights for export).

The groups, and why:
- every decoder layer is a group: only one layer's full weights exist at a time;
- the decoder module *and* the output head are one group (embeddings, final norm, head): our loss
  (loss.py) calls the decoder and then the head on the answer positions only, so the model's own
  forward never runs in training. In one group the decoder's forward gathers the head as well, and
  tied input/output embeddings (one tensor) must be in one group anyway. It stays gathered from
  forward to backward, as torchtitan keeps its root;
- the whole model is the root, whose forward generation and validation run.
FSDP makes the first module to run forward the root, so `shard` runs one one-token forward through the
whole model before training calls the decoder alone.

Peft's frozen base weights and its adapters share a layer's group: FSDP2 shards both, gathers both, and
reduce-scatters only the gradients that exist (checked: the adapters' gradients equal one process's).
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from tuneloop.errors import TuneloopError


def shard(model, *, bf16: bool, cpu_offload: bool):
    """Shard `model` (the method's model: peft adapters attached, or the full model) across the ranks, in place."""
    options = {}
    if bf16:  # compute in bf16, reduce gradients in fp32 (what autocast and fp32 master weights give one process)
        options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    if cpu_offload:  # sharded weights, gradients and AdamW in host memory; a group is copied to the GPU to compute
        options["offload_policy"] = CPUOffloadPolicy(pin_memory=torch.cuda.is_available())
    decoder = model.get_decoder()
    for module, reshard_after_forward in _groups(model):
        together = [decoder, model.get_output_embeddings()] if module is decoder else module
        fully_shard(together, reshard_after_forward=reshard_after_forward, **options)
    for module in _fsdp_modules(model):
        # Our losses are already divided by the token count of the whole step (all ranks), so the ranks'
        # gradients must be summed, not averaged (FSDP's default). A factor alone would reduce with
        # PREMUL_SUM(1.0), which gloo refuses; forcing sum reductions makes it a plain SUM on gloo and nccl.
        module.set_gradient_divide_factor(1.0)
        module.set_force_sum_reduction_for_comms(True)
    was_training = model.training
    with torch.no_grad():  # the first forward makes the whole model FSDP's root (eval: no dropout draws)
        model.eval()
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=next(model.parameters()).device), use_cache=False)
    model.train(was_training)
    resharded(model)  # that forward left the decoder's group gathered; the optimizer must see the shards
    return model


def _groups(model) -> list[tuple[torch.nn.Module, bool]]:
    """(module, reshard after forward) for every fully_shard call, innermost first."""
    decoder = model.get_decoder()
    return [*((layer, True) for layer in decoder_layers(model)), (decoder, False), (model, False)]


def decoder_layers(model) -> list[torch.nn.Module]:
    """The repeated blocks, by the model's own `_no_split_modules` (what accelerate's device maps also cut at)."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    names = set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in model.get_decoder().modules() if names & {c.__name__ for c in type(m).__mro__}]  # FSDP subclasses them
    if not layers:
        raise TuneloopError(f"train.distributed fsdp: found no decoder layers in {type(base).__name__} (its _no_split_modules "
                            f"are {sorted(names)}); use train.distributed ddp")
    return layers


def _fsdp_modules(model) -> list[FSDPModule]:
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def resharded(model):
    """Make every group hold only its shard (the registered parameters are then the DTensors the optimizer
    and checkpoints use); a group kept gathered after a forward without backward would otherwise stay so."""
    for module in _fsdp_modules(model):
        module.reshard()
    return model


@contextmanager
def accumulating(model, micro_batches: int):
    """Around one optimizer step's forward and backward passes over this rank's `micro_batches`.

    Adapters: gradients are not reduce-scattered after every micro-batch but summed locally and
    reduce-scattered once, in the last micro-batch's backward (FSDP2's set_requires_gradient_sync). The
    objective owns the micro-batch loop, so sync is switched back on by a hook on the decoder's forward:
    the last micro-batch is the one whose gradient-carrying forward is the `micro_batches`-th (SFT and
    DPO run one such forward per micro-batch; more forwards only sync earlier, which is still exact).
    Full fine-tuning syncs every micro-batch: unreduced gradients are full-size on every rank, which would
    undo the gradient sharding that full runs use FSDP for.
    """
    if micro_batches == 1 or not isinstance(model, PeftModel):
        yield
        return
    forwards = 0

    def count(module, args):
        nonlocal forwards
        if torch.is_grad_enabled():
            forwards += 1
            if forwards == micro_batches:
                model.set_requires_gradient_sync(True)

    model.set_requires_gradient_sync(False)
    hook = model.get_decoder().register_forward_pre_hook(count)
    try:
        yield
    finally:
        hook.remove()
        model.set_requires_gradient_sync(True)
    if forwards < micro_batches:
        raise TuneloopError(f"train.distributed fsdp: the objective ran {forwards} forward passes with gradients over "
                            f"{micro_batches} micro-batches, so its last gradients were never reduced; use train.distributed ddp")


@contextmanager
def gathered(model):
    """Every group's full weights on every rank, with no collective in any forward, for validation: ranks
    hold different numbers of validation examples (and answers of different lengths), so their forwards
    need not line up as FSDP's all-gathers require. The memory of DDP for as long as it lasts."""
    groups = _groups(model)
    for module, _ in groups:
        module.set_reshard_after_forward(False, recurse=False)
        module.unshard()
    try:
        yield model
    finally:
        for module, reshard_after_forward in groups:
            module.set_reshard_after_forward(reshard_after_forward, recurse=False)
        resharded(model)


def full_state_dict(model, world, trainable_only: bool) -> dict[str, torch.Tensor]:
    """The consolidated (unsharded) tensors of the state dict on rank 0, on the CPU; {} on the other ranks.
    Every rank must call it: each DTensor is all-gathered in turn (one tensor's full size at a time)."""
    resharded(model)
    wanted = {name for name, p in model.named_parameters() if p.requires_grad} if trainable_only else None
    params = dict(model.named_parameters(remove_duplicate=False))
    full, gathered_once = {}, {}
    for name, value in model.state_dict().items():
        if wanted is not None and name not in wanted:
            continue
        value = params.get(name, value)  # the parameter itself: tied embeddings are one under two names
        if isinstance(value, DTensor):
            if id(value) not in gathered_once:  # gathered once, saved once (transformers drops the tied name)
                whole = value.full_tensor()
                gathered_once[id(value)] = whole.detach().cpu() if world.main else None
            value = gathered_once[id(value)]
        if world.main:
            full[name] = value.detach().cpu()
    return full


def export(model, tokenizer, target: Path, world) -> None:
    """The usual adapter/ or model/ folder from the gathered weights, written by rank 0 (peft's adapter files
    for LoRA, transformers' model folder for full runs), so eval, serve and export read it unchanged."""
    state = full_state_dict(model, world, trainable_only=isinstance(model, PeftModel))
    if world.main:
        shutil.rmtree(target, ignore_errors=True)
        model.save_pretrained(target, state_dict=state)  # transformers drops FSDP's class-name prefix itself
        tokenizer.save_pretrained(target)
    world.barrier()

