"""`tuneloop train`: our own training loop over PyTorch + transformers + peft, in the spirit of a torchtune recipe.

Reads top to bottom: setup (placement, tokenizer, objective and data, pre-flight estimate, model)
-> loop (micro-batches, backward, gradient sum across ranks, clip, step, log, validate, checkpoint,
early stop) -> save (adapter or model folder, metrics.jsonl, loss.png, TensorBoard, manifest.json).
The objective (SFT or DPO) supplies batches, the loss and validation; the method (LoRA, DoRA,
QLoRA, full) decides which weights train. Under `torchrun` / `accelerate launch` the same loop runs
data-parallel (see distributed.py), or sharded with `train.distributed: fsdp` (fsdp.py, sharded.py).
"""

from __future__ import annotations

import itertools
import math
import resource
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from peft import PeftModel
from transformers import get_scheduler, set_seed

from tuneloop import threads
from tuneloop.artifacts import exclusive, manifest_task, normal_modes, write_manifest
from tuneloop.config import ModelConfig, ObjectiveConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.layout import Checkpoint, DataDir, TrainDir
from tuneloop.models import load_tokenizer
from tuneloop.models.provenance import base_record, stamp_adapter
from tuneloop.train.checkpoint import (best_checkpoint, latest_checkpoint, legacy_checkpoints, load_checkpoint, load_weights,
                                      mark_best, prune, save_checkpoint)
from tuneloop.train.distributed import World
from tuneloop.train.early_stop import EarlyStop
from tuneloop.train.fsdp import accumulating, gathered, shard
from tuneloop.train.fsdp import export as export_sharded
from tuneloop.train.methods import build_model, placement, shallow_model, trainable_parameters
from tuneloop.train.objectives import Objective, build_objective
from tuneloop.train.plots import plot_losses
from tuneloop.train.preflight import estimate, measure_speed
from tuneloop.train.sharded import check_resumable, load_sharded, load_sharded_weights, save_sharded
from tuneloop.train.tracking import MetricsLog
from tuneloop.ui import console, progress


def train(cfg: TrainConfig, model_cfg: ModelConfig, data_dir: Path, out: Path, resume: bool = False, dry_run: bool = False,
          wait_for_lock: float = 0.0, criteria: ObjectiveConfig | None = None, on_eval: Callable[[dict], None] | None = None,
          tags: dict | None = None) -> dict:
    """Fine-tune `model_cfg.name` on `data_dir`/train.jsonl; write the result to `out`.

    `resume`: continue from the latest complete checkpoint in `out`/checkpoints, exactly where it was.
    `dry_run`: print the pre-flight estimate and the measured speed, then stop before training.
    One trainer at a time writes `out` (a lock; another waits up to `wait_for_lock` seconds for it).
    `criteria`: the pipeline's objective section, whose reward (by default its gates) GRPO maximises.
    `on_eval`: called with each step's record that holds validation numbers (after it is logged); what it raises
    stops the run there (a sweep's pruner). `tags`: written into the manifest (a sweep's trial and parameters).
    """
    if cfg.backend == "openai-compatible":  # a provider trains it: nothing runs here but the upload and the follower
        from tuneloop.train.hosted import train_hosted

        with exclusive(TrainDir(out).lock, "this training run", wait=wait_for_lock):
            return train_hosted(cfg, data_dir, out, resume)
    threads.apply()  # as many compute threads as this process may run at once (affinity, cgroup quota)
    world = World()
    if dry_run or not world.main:  # a dry run writes nothing; ranks other than the first write nothing either
        return _train(cfg, model_cfg, data_dir, out, resume, dry_run, world, criteria, on_eval, tags)
    with exclusive(TrainDir(out).lock, "this training run", wait=wait_for_lock):
        return _train(cfg, model_cfg, data_dir, out, resume, dry_run, world, criteria, on_eval, tags)


def _train(cfg: TrainConfig, model_cfg: ModelConfig, data_dir: Path, out: Path, resume: bool, dry_run: bool, world: World,
           criteria: ObjectiveConfig | None, on_eval: Callable[[dict], None] | None = None, tags: dict | None = None) -> dict:
    started = time.time()
    where = placement(cfg, world.local_rank)
    say = console.print if world.main else (lambda *a, **k: None)
    set_seed(cfg.seed)

    # --- setup -------------------------------------------------------------------------------
    tokenizer = load_tokenizer(model_cfg.name)
    objective = build_objective(tokenizer, data_dir, cfg, criteria)
    if objective.truncated:
        say(f"[yellow]warning:[/] {objective.truncated} training example(s) longer than max_seq_len={cfg.max_seq_len} were truncated")
    data = objective.stats()
    micro_per_step = cfg.grad_accum * world.size
    sharded = cfg.distributed == "fsdp" and world.size > 1  # one process has nothing to shard across
    steps_per_epoch = math.ceil(math.ceil(data["examples"] / cfg.batch_size) / micro_per_step)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    plan = estimate(model_cfg.name, cfg, where.device, where.bf16, longest=data["longest"], longest_target=data["longest_target"],
                    tokens_per_epoch=data["tokens"], steps=total_steps, rows_per_example=objective.rows_per_example,
                    shards=world.size if sharded else 1)
    say(plan.summary())
    if plan.gradient_checkpointing and not cfg.gradient_checkpointing:
        say("[yellow]gradient checkpointing on[/]: the run would not fit without it (about 20% slower)")
        cfg = cfg.model_copy(update={"gradient_checkpointing": True})
    if dry_run:
        return _dry_run(objective, model_cfg, cfg, plan, total_steps * micro_per_step * cfg.batch_size, data, world, where, say)
    model = build_model(model_cfg, cfg, where)
    objective.attach(model)  # before sharding: DPO's frozen reference copy of a full model stays whole
    if sharded:
        model = shard(model, bf16=where.bf16, cpu_offload=plan.cpu_offload)
    params = trainable_parameters(model)

    # fused (CPU and CUDA): one kernel for all parameters, ~5x faster than the per-tensor loop on CPU for 33M parameters.
    # Under FSDP the parameters are DTensors; the fused kernel runs on each rank's local shards (checked on CPU).
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=True)
    scheduler = _scheduler(cfg, optimizer, total_steps)
    say(f"train: {cfg.method} {cfg.objective}, {data['examples']} examples, {total_steps} steps of "
        f"{cfg.batch_size}x{cfg.grad_accum}{f'x{world.size} ranks' if world.size > 1 else ''} on {where.device}"
        f"{' (bf16)' if where.bf16 else ''}")

    # --- loop --------------------------------------------------------------------------------
    run = TrainDir(out)
    checkpoints = run.checkpoints.root
    done, records = _resume(checkpoints, model, optimizer, scheduler, say, world if sharded else None) if resume else (0, [])
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(run, records, cfg, params={"model": model_cfg.name, **_flat(cfg.model_dump(mode="json"))}) if world.main else None
    selection_key, selection_mode = cfg.selection
    watch = EarlyStop(cfg.early_stopping, records, selection_key, selection_mode)
    # Under FSDP every rank writes its own shards of a checkpoint; otherwise rank 0 writes it whole.
    checkpointing = (world.main or sharded) and bool(cfg.save_every or cfg.early_stopping.patience)
    groups = _step_groups(objective, micro_per_step, done, world)
    loop_started = time.perf_counter()
    with progress() as bar, log.closing_on_error() if log else nullcontext():
        task = bar.add_task("train", total=total_steps, completed=done, info="", visible=world.main)
        for step in range(done + 1, total_steps + 1):
            group = next(groups)
            record = {"step": step, **_optimizer_step(objective, model, group, params, optimizer, scheduler, cfg, world, where, sharded)}
            if not math.isfinite(record["train_loss"]):
                raise _non_finite_loss(record, checkpoints)
            if objective.val_set and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total_steps):
                model.eval()
                with gathered(model) if sharded else nullcontext():
                    record.update(objective.validate(model, world, where))
                model.train()
            records.append(record)
            if log:
                log.write(record)
            if on_eval and any(key.startswith("val_") for key in record):
                on_eval(record)
            improved = watch.update(record)
            pausing = world.size == 1 and run.pause.is_file()  # a paused job: checkpoint here, then stop
            if (checkpointing and (improved or (cfg.save_every and step % cfg.save_every == 0))) or pausing:
                if sharded:
                    save_sharded(checkpoints, step, model, optimizer, scheduler, records, world)
                else:
                    save_checkpoint(checkpoints, step, model, optimizer, scheduler, records)
                if improved and world.main:
                    mark_best(checkpoints, step, selection_key, record[selection_key])
                if world.main:
                    prune(checkpoints, cfg.keep_last)
            shown = f" · reward {record['reward']:.3f}" if "reward" in record else ""
            bar.update(task, advance=1, info=f"loss {record['train_loss']:.3f}{shown} · {record.get('tokens_per_s', 0):,.0f} tok/s")
            if watch.should_stop:
                say(f"early stop at step {step}: no improvement of {selection_key} in {watch.bad} evaluations")
                break
            if pausing:
                say(f"paused at step {step}: checkpoint written; continue with --resume")
                if log:
                    log.close()
                return {"paused_at_step": step, "checkpoint": str(latest_checkpoint(checkpoints))}

    # --- save --------------------------------------------------------------------------------
    summary = {**_summary(cfg, records, data, plan, watch, done, started), "device": str(where.device),
               "loop_s": round(time.perf_counter() - loop_started, 2),
               "precision": "bf16" if where.bf16 else "fp32", "world_size": world.size}
    weights = run.weights_for(adapter=isinstance(model, PeftModel))
    best_of = checkpoints if cfg.early_stopping.patience else None
    if sharded:  # every rank: the best checkpoint's shards back in, then the weights gathered to rank 0
        best = _export_sharded(model, tokenizer, best_of, weights, world)
    elif world.main:
        best = _export(model, tokenizer, best_of, weights)
    if world.main:
        summary["best_step"] = Checkpoint(best).step if best else None
        base = base_record(model_cfg.name, model_cfg.hub_id)
        if isinstance(model, PeftModel):
            stamp_adapter(weights, base["hub_id"])  # loads on any machine: peft, vLLM and providers find the base by it
        normal_modes(weights)
        log.close()
        plot_losses(records, run.loss_plot)
        log.finish([run.loss_plot, run.metrics], weights, summary)
        write_manifest(
            out, "train", cfg, inputs={"train": DataDir(data_dir).train},
            outputs=[weights, run.metrics, run.loss_plot], seed=cfg.seed, started=started,
            parent=data_dir, extra={"model": base, "summary": summary, "task": manifest_task(data_dir), **({"sweep": tags} if tags else {})},
        )
    world.close()
    return summary


def _flat(config: dict, prefix: str = "") -> dict:
    """A nested config as dotted keys (lora.r), as trackers list parameters."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _optimizer_step(objective: Objective, model, group: list[dict], params: list, optimizer, scheduler, cfg: TrainConfig, world, where,
                    sharded: bool = False) -> dict:
    """Forward/backward over this rank's micro-batches, sum gradients over ranks, clip, step."""
    tick = time.perf_counter()
    with accumulating(model, len(group)) if sharded else nullcontext():
        stats = objective.step(model, group, world, where)
    if not sharded:  # FSDP has reduce-scattered them in the backward pass
        world.sum_gradients(params)
    # On FSDP's sharded gradients (DTensors) the norm is summed across ranks: every rank clips by the same total.
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
    tokens = stats.pop("tokens")
    if not (math.isfinite(stats["train_loss"]) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)  # never apply a step computed from inf/nan
        return {**stats, "train_loss": stats["train_loss"] if not math.isfinite(stats["train_loss"]) else float("nan"), "grad_norm": grad_norm}
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {**stats, "lr": scheduler.get_last_lr()[0], "grad_norm": grad_norm, "tokens_per_s": tokens / (time.perf_counter() - tick)}


def _step_groups(objective: Objective, micro_per_step: int, done: int, world):
    """This rank's micro-batches for each optimizer step from `done + 1` on: a new group every
    `objective.steps_per_group` steps (GRPO's iterations: one rollout serves several updates), else the
    last group again; a run resumed inside such a cycle draws that cycle's group again."""
    every = objective.steps_per_group
    stream = _micro_batches(objective, skip=(done // every) * micro_per_step)
    group = None
    for step in itertools.count(done + 1):
        if group is None or (step - 1) % every == 0:
            group = [next(stream) for _ in range(micro_per_step)][world.rank :: world.size]
        yield group


def _micro_batches(objective: Objective, skip: int = 0):
    """Endless stream of collated micro-batches, reshuffled every epoch; the first `skip` are passed
    over without collating (a resumed run continues at the same place in the same order)."""
    epoch = 0
    while True:
        for examples in objective.batches(epoch):
            if skip:
                skip -= 1
                continue
            yield objective.collate(examples)
        epoch += 1


def _scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    """Warmup, then cosine or linear decay to zero, or a constant learning rate."""
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=round(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)


def _dry_run(objective: Objective, model_cfg: ModelConfig, cfg: TrainConfig, plan, examples_total: int, data: dict,
             world, where, say) -> dict:
    """Estimate the run's duration without loading the model: time a real micro-batch (forward + backward, no
    update) through the model cut to one and to two layers, and extrapolate to all of its layers."""
    first = objective.batches(0)[0]
    timed = {}
    for layers in (1, 2):
        model = shallow_model(model_cfg, cfg, where, layers)
        objective.attach(model)
        batch = objective.collate(first)  # after attach: the model decides whether batches are packed
        timed[layers] = measure_speed(lambda: (objective.step(model, [batch], world, where), model.zero_grad(set_to_none=True)),
                                      micro_batches=2)
    per_layer = max(timed[2] - timed[1], 0.0)
    seconds = timed[1] + per_layer * (plan.layers - 1)
    estimated = seconds / len(first) * examples_total / world.size
    say(f"dry run: about {seconds:.2f} s per micro-batch of {len(first)} (timed on 1 and 2 of {plan.layers} layers); "
        f"estimated training time {estimated / 60:.1f} min")
    return {"dry_run": True, **plan.as_dict(), "seconds_per_micro_batch": round(seconds, 3), "estimated_seconds": round(estimated, 1), **data}


def _export(model, tokenizer, checkpoints: Path | None, target: Path) -> Path | None:
    """Write the adapter (or full model) to `target`: the best checkpoint's weights when early
    stopping chose one, else the current weights. Returns the best checkpoint used, if any."""
    best = best_checkpoint(checkpoints) if checkpoints is not None else None
    if best is not None:
        load_weights(model, Checkpoint(best).weights)
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return best


def _export_sharded(model, tokenizer, checkpoints: Path | None, target: Path, world) -> Path | None:
    """`_export` under FSDP, on every rank."""
    world.barrier()  # rank 0 marks the best checkpoint after the others have moved on
    best = best_checkpoint(checkpoints) if checkpoints is not None else None
    if best is not None:
        load_sharded_weights(best, model, world)
    export_sharded(model, tokenizer, target, world)
    return best


def _summary(cfg: TrainConfig, records: list[dict], data: dict, plan, watch: EarlyStop, done: int, started: float) -> dict:
    last = records[-1]
    speeds = [r["tokens_per_s"] for r in records[1:] if "tokens_per_s" in r] or [records[0].get("tokens_per_s", 0)]
    peak = torch.cuda.max_memory_allocated() / 1024**3 if torch.cuda.is_available() else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {
        "method": cfg.method, "objective": cfg.objective, "steps": last["step"], "examples": data["examples"],
        "tokens_per_epoch": data.get("tokens"),
        "trainable_params": plan.trainable, "first_loss": records[0]["train_loss"], "final_loss": last["train_loss"],
        "val_loss": last.get("val_loss"), "selected_by": watch.key, "best_selection": watch.best_value,
        "best_val_loss": watch.best_value if watch.key == "val_loss" else None,
        "stopped_early": watch.should_stop, "resumed_from": done or None,
        "tokens_per_s": round(sum(speeds) / len(speeds), 1), "peak_memory_gb": round(peak, 2),
        "estimated_peak_gb": round(plan.peak_gb, 2), "wall_s": round(time.time() - started, 1),
        **{k: v for k, v in last.items() if "reward" in k},
    }


def _non_finite_loss(record: dict, checkpoints: Path) -> TuneloopError:
    last = latest_checkpoint(checkpoints)
    return TuneloopError(
        f"training loss became {record['train_loss']} at step {record['step']}; stopped before updating the weights. "
        f"Last good checkpoint: {last or 'none (set train.save_every)'}. Lower train.learning_rate and resume."
    )


def _resume(checkpoints: Path, model, optimizer, scheduler, say, sharded_world: World | None = None) -> tuple[int, list[dict]]:
    """The latest complete checkpoint back in place; `sharded_world` under FSDP (each rank reads its own shards)."""
    last = latest_checkpoint(checkpoints)
    if last is None:
        if legacy := legacy_checkpoints(checkpoints):
            raise TuneloopError(f"{legacy[-1]}: written by an older tuneloop, whose checkpoint state is a pickle; tuneloop no "
                                f"longer loads pickles (one from another machine could run code). Start the run again "
                                f"without --resume, into a new --out folder")
        say(f"[yellow]no checkpoint in {checkpoints}: starting from step 0[/]")
        return 0, []
    check_resumable(last, sharded_world, sharded=sharded_world is not None)
    if sharded_world is not None:
        step, records = load_sharded(last, model, optimizer, scheduler, sharded_world)
    else:
        step, records = load_checkpoint(last, model, optimizer, scheduler)
    say(f"resuming from {last} (step {step})")
    return step, records
