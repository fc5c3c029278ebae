"""`tuneloop train`: supervised fine-tuning with LoRA, our own loop over PyTorch + transformers + peft.

Reads top to bottom: setup (seed, tokenizer, model, adapter, data) -> loop (accumulate, clip, step,
log, validate) -> save (adapter folder, metrics.jsonl, loss.png, manifest.json).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import get_scheduler, set_seed

from tuneloop.artifacts import read_jsonl, read_manifest, write_manifest
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.models import encode_chat, load_model, load_tokenizer
from tuneloop.train.batching import collate, length_grouped_batches
from tuneloop.train.checkpoint import best_checkpoint, latest_checkpoint, load_checkpoint, mark_best, prune, save_checkpoint
from tuneloop.train.early_stop import EarlyStop
from tuneloop.train.loss import answer_loss_sum
from tuneloop.train.plots import plot_losses
from tuneloop.ui import console, progress


def train(cfg: TrainConfig, model_cfg: ModelConfig, data_dir: Path, out: Path, resume: bool = False) -> dict:
    """Fine-tune `model_cfg.name` on `data_dir`/train.jsonl; write the adapter to `out`/adapter.

    `resume`: continue from the latest complete checkpoint in `out`/checkpoints, exactly where it was.
    """
    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)

    # --- setup -------------------------------------------------------------------------------
    tokenizer = load_tokenizer(model_cfg.name)
    model = _lora_model(model_cfg, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    trainable, total = sum(p.numel() for p in params), sum(p.numel() for p in model.parameters())

    train_set = _encode(tokenizer, data_dir / "train.jsonl", cfg.max_seq_len)
    val_set = _encode(tokenizer, data_dir / "val.jsonl", cfg.max_seq_len) if (data_dir / "val.jsonl").is_file() else []
    if not train_set:
        raise TuneloopError(f"{data_dir / 'train.jsonl'}: no training examples with answer tokens")
    truncated = sum(e.truncated for e in train_set)
    if truncated:
        console.print(f"[yellow]warning:[/] {truncated} training example(s) longer than max_seq_len={cfg.max_seq_len} were truncated")

    steps_per_epoch = math.ceil(math.ceil(len(train_set) / cfg.batch_size) / cfg.grad_accum)
    total_steps = cfg.max_steps or math.ceil(cfg.epochs * steps_per_epoch)
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = _scheduler(cfg, optimizer, total_steps)
    console.print(
        f"train: {len(train_set)} examples, {total_steps} steps of {cfg.batch_size}x{cfg.grad_accum}, "
        f"LoRA r={cfg.lora.r}: {trainable:,} trainable of {total:,} parameters"
    )

    # --- loop --------------------------------------------------------------------------------
    checkpoints = out / "checkpoints"
    done, records = _resume(checkpoints, model, optimizer, scheduler) if resume else (0, [])
    metrics_path = out / "metrics.jsonl"
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))  # drops steps after the checkpoint
    watch = EarlyStop(cfg.early_stopping, records)
    checkpointing = bool(cfg.save_every or cfg.early_stopping.patience)
    micro_batches = _micro_batches(train_set, cfg, tokenizer.pad_token_id, skip=done * cfg.grad_accum)
    model.train()
    with progress() as bar:
        task = bar.add_task("train", total=total_steps, completed=done, info="")
        for step in range(done + 1, total_steps + 1):
            group = [next(micro_batches) for _ in range(cfg.grad_accum)]
            record = {"step": step, **_optimizer_step(model, group, params, optimizer, scheduler, cfg.max_grad_norm)}
            if not math.isfinite(record["train_loss"]):
                raise _non_finite_loss(record, checkpoints)
            if val_set and ((cfg.eval_every and step % cfg.eval_every == 0) or step == total_steps):
                record["val_loss"] = _validation_loss(model, val_set, cfg.batch_size, tokenizer.pad_token_id)
            records.append(record)
            with open(metrics_path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            improved = watch.update(record)
            if checkpointing and (improved or (cfg.save_every and step % cfg.save_every == 0)):
                save_checkpoint(checkpoints, step, model, optimizer, scheduler, records)
                if improved:
                    mark_best(checkpoints, step, record["val_loss"])
                prune(checkpoints, cfg.keep_last)
            bar.update(task, advance=1, info=f"loss {record['train_loss']:.3f}")
            if watch.should_stop:
                console.print(f"early stop at step {step}: no validation improvement in {watch.bad} evaluations")
                break

    # --- save --------------------------------------------------------------------------------
    best = _export_adapter(model, tokenizer, checkpoints if cfg.early_stopping.patience else None, out / "adapter")
    plot_losses(records, out / "loss.png")
    summary = {
        "steps": records[-1]["step"], "examples": len(train_set), "trainable_params": trainable,
        "first_loss": records[0]["train_loss"], "final_loss": records[-1]["train_loss"],
        "val_loss": records[-1].get("val_loss"), "best_val_loss": None if math.isinf(watch.best) else watch.best,
        "best_step": int(best.name.removeprefix("step-")) if best else None, "stopped_early": watch.should_stop,
        "resumed_from": done or None, "wall_s": round(time.time() - started, 1),
    }
    write_manifest(
        out, "train", cfg, inputs={"train": data_dir / "train.jsonl"},
        outputs=[out / "adapter", metrics_path, out / "loss.png"], seed=cfg.seed, started=started,
        parent=data_dir, extra={"model": model_cfg.model_dump(), "summary": summary, "task": _task_of(data_dir)},
    )
    return summary


def _scheduler(cfg: TrainConfig, optimizer, total_steps: int):
    """Warmup, then cosine or linear decay to zero, or a constant learning rate."""
    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[cfg.scheduler]
    return get_scheduler(name, optimizer, num_warmup_steps=round(cfg.warmup_ratio * total_steps), num_training_steps=total_steps)


def _non_finite_loss(record: dict, checkpoints: Path) -> TuneloopError:
    last = latest_checkpoint(checkpoints)
    return TuneloopError(
        f"training loss became {record['train_loss']} at step {record['step']}; stopped before updating the weights. "
        f"Last good checkpoint: {last or 'none (set train.save_every)'}. Lower train.learning_rate and resume."
    )


def _lora_model(model_cfg: ModelConfig, cfg: TrainConfig):
    model = load_model(model_cfg.name)
    return get_peft_model(model, PeftLoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
    ))


def _export_adapter(model, tokenizer, checkpoints: Path | None, target: Path) -> Path | None:
    """Write the adapter to `target`: the best checkpoint's when early stopping chose one, else the
    current weights. Returns the best checkpoint used, if any."""
    best = best_checkpoint(checkpoints) if checkpoints is not None else None
    if best is not None:
        shutil.copytree(best / "adapter", target, dirs_exist_ok=True)
    else:
        model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return best


def _optimizer_step(model, group: list[dict], params: list, optimizer, scheduler, max_grad_norm: float) -> dict:
    """Forward/backward over the micro-batches of one step, then clip, step and log."""
    tick = time.perf_counter()
    # Divide by the answer tokens of the whole optimizer step, not per micro-batch: that is what makes
    # batch 2 x accumulation 4 equal batch 8 x accumulation 1.
    n_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in group)
    loss_total = 0.0
    for batch in group:
        loss_sum, _ = answer_loss_sum(model, batch)
        (loss_sum / n_tokens).backward()
        loss_total += loss_sum.item()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if not (math.isfinite(loss_total) and math.isfinite(grad_norm)):
        optimizer.zero_grad(set_to_none=True)  # never apply a step computed from inf/nan
        return {"train_loss": loss_total if not math.isfinite(loss_total) else float("nan"), "grad_norm": float(grad_norm)}
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    seen = sum(int(b["attention_mask"].sum()) for b in group)
    return {
        "train_loss": loss_total / n_tokens, "lr": scheduler.get_last_lr()[0],
        "grad_norm": float(grad_norm), "tokens_per_s": seen / (time.perf_counter() - tick),
    }


def _encode(tokenizer, path: Path, max_len: int) -> list:
    examples = [encode_chat(tokenizer, row["messages"], max_len) for row in read_jsonl(path)]
    return [e for e in examples if e.n_target > 0]


def _micro_batches(examples: list, cfg: TrainConfig, pad_id: int, skip: int = 0):
    """Endless stream of collated micro-batches, reshuffled every epoch; the first `skip` are passed
    over without collating (a resumed run continues at the same place in the same order)."""
    epoch = 0
    while True:
        for indices in length_grouped_batches(examples, cfg.batch_size, cfg.seed + epoch):
            if skip:
                skip -= 1
                continue
            yield collate([examples[i] for i in indices], pad_id)
        epoch += 1


def _resume(checkpoints: Path, model, optimizer, scheduler) -> tuple[int, list[dict]]:
    last = latest_checkpoint(checkpoints)
    if last is None:
        console.print(f"[yellow]no checkpoint in {checkpoints}: starting from step 0[/]")
        return 0, []
    step, records = load_checkpoint(last, model, optimizer, scheduler)
    console.print(f"resuming from {last} (step {step})")
    return step, records


@torch.no_grad()
def _validation_loss(model, examples: list, batch_size: int, pad_id: int) -> float:
    model.eval()
    loss, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss_sum, n = answer_loss_sum(model, collate(examples[start : start + batch_size], pad_id))
        loss, tokens = loss + loss_sum.item(), tokens + n
    model.train()
    return loss / max(tokens, 1)


def _task_of(data_dir: Path) -> dict | None:
    """Carry the task (system prompt, schema) forward so serving can reproduce training prompts."""
    try:
        return read_manifest(data_dir).get("task")
    except TuneloopError:
        return None
