"""tuneloop's trainer against TRL's SFTTrainer, side by side, on the same data, model and settings.

    pip install -e '.[bench]'                     # TRL: a benchmark-only dependency
    .venv/bin/python benchmarks/train_vs_trl.py   # writes the "Training vs TRL" section of RESULTS.md

Both sides get the same deterministic synthetic data (prompt/answer pairs of 20-400 tokens, loss on
the answers only, tokenized once by the same chat encoder so the token ids and labels are identical),
the same 33M-parameter Llama built from a config with a fixed seed, the same LoRA config (r 16,
alpha 32, dropout 0.05, every linear layer), AdamW with the same learning rate, linear decay without
warm-up, gradient clipping at 1, batch 8, seed 0 and number of epochs. Each run is a fresh child
process of this one, in the same environment; the variants alternate round by round.

Reported per run: non-pad tokens/s over the training loop (every variant trains on exactly the same
tokens, so this is total tokens / loop seconds), loop and process wall time, peak RSS of the child,
the mean training loss of the last 10 steps and the validation loss, computed after training by the
same plain function for every variant (answer tokens of 40 held-out rows, one row at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Training vs TRL"

# variant -> (trainer, method, settings: SFTConfig fields for TRL, TrainConfig fields for tuneloop)
VARIANTS = {
    "tuneloop": ("tuneloop", "lora", {}),
    "tuneloop-padded": ("tuneloop", "lora", {"padding_free": False}),  # lever check: padded shuffled batches
    "trl-default": ("trl", "lora", {}),  # SFTConfig defaults: padded batches, gradient checkpointing on
    "trl-best": ("trl", "lora", {"padding_free": True, "gradient_checkpointing": False}),
    "tuneloop-plain": ("tuneloop", "lora", {"fast_kernels": False}),  # lever check: peft's layers, unchunked loss
    "tuneloop-grouped": ("tuneloop", "lora", {"group_by_length": True}),  # lever check: length-grouped batches
    "tuneloop-full": ("tuneloop", "full", {}),
    "trl-default-full": ("trl", "full", {}),
}
LABELS = {
    "tuneloop": "tuneloop LoRA",
    "tuneloop-padded": "tuneloop LoRA, padding_free off",
    "trl-default": "TRL SFTTrainer LoRA, defaults (padded, gradient checkpointing)",
    "trl-best": "TRL SFTTrainer LoRA, best (padding_free, no checkpointing)",
    "tuneloop-plain": "tuneloop LoRA, fast_kernels off",
    "tuneloop-grouped": "tuneloop LoRA, group_by_length on",
    "tuneloop-full": "tuneloop full fine-tuning",
    "trl-default-full": "TRL SFTTrainer full fine-tuning, defaults",
}
MODEL = {"hidden_size": 384, "intermediate_size": 1024, "num_hidden_layers": 9, "num_attention_heads": 6,
         "num_key_value_heads": 2, "max_position_embeddings": 1024, "tie_word_embeddings": True}
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "da", "fu", "gi", "he", "ju", "be"]


# --- data and model ------------------------------------------------------------------------------

def synthetic_rows(n: int, seed: int, tokenizer, vocab: int = 49152) -> list[dict]:
    """Stock reports of a random number of lines; the answer names the largest lines and the total.

    Lengths spread evenly over ~20-400 tokens and the answer is ~10% of a row, like real SFT data.
    """
    rng = random.Random(seed)
    words = sorted({rng.choice(SYLLABLES) + rng.choice(SYLLABLES) + rng.choice(SYLLABLES) for _ in range(400)})
    rows = []
    while len(rows) < n:
        target = rng.randint(20, 400)
        lines = [f"{rng.choice(words)}: {rng.randint(1, 999)}" for _ in range(max(1, (target - 30) // 7))]
        top = sorted(lines, key=lambda x: -int(x.split(": ")[1]))[: max(1, target // 80)]
        answer = json.dumps({"top": [x.split(": ")[0] for x in top], "total": sum(int(x.split(": ")[1]) for x in lines)})
        messages = [{"role": "system", "content": "Answer in JSON."},
                    {"role": "user", "content": "Stock report:\n" + "\n".join(lines) + "\nLargest lines and total?"},
                    {"role": "assistant", "content": answer}]
        ids = tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"]
        assert max(ids) < vocab, "the tokenizer must fit the model's vocabulary"
        if len(ids) <= 512:
            rows.append({"messages": messages})
    return rows


def prepare(work: Path, train_rows: int, val_rows: int, vocab: int) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from tuneloop.models import load_tokenizer, resolve_model

    embedded = resolve_model("smollm2-135m-instruct")
    load_tokenizer(embedded).save_pretrained(work / "model")
    if vocab < 49152:
        truncate_vocabulary(work / "model/tokenizer.json", vocab)
    tokenizer = AutoTokenizer.from_pretrained(work / "model")  # the model folder has no config.json yet
    rows = synthetic_rows(train_rows + val_rows, 0, tokenizer, vocab)
    (work / "data").mkdir()
    (work / "data/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:train_rows]))
    (work / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[train_rows:]))
    config = AutoConfig.from_pretrained(embedded)
    for key, value in {**MODEL, "vocab_size": vocab}.items():
        setattr(config, key, value)
    config.head_dim = config.hidden_size // config.num_attention_heads
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(work / "model")


def truncate_vocabulary(path: Path, vocab: int) -> None:
    """SmolLM2's byte-level BPE cut to its first `vocab` ids: tokens above them and the merges that make them go.

    Words then split into more, shorter tokens (ids follow merge order, so every kept token is still built
    from kept ones); special tokens and the chat template are unchanged. A real 16k-vocabulary tokenizer,
    with the model's head and embedding a third of the 49k ones."""
    spec = json.loads(path.read_text())
    kept = {token: i for token, i in spec["model"]["vocab"].items() if i < vocab}
    merges = [m.split(" ", 1) if isinstance(m, str) else m for m in spec["model"]["merges"]]
    spec["model"]["vocab"] = kept
    spec["model"]["merges"] = [[a, b] for a, b in merges if a in kept and b in kept and a + b in kept]
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["id"] < vocab]
    path.write_text(json.dumps(spec, ensure_ascii=False))


def encoded(work: Path, name: str) -> list:
    from tuneloop.artifacts import read_jsonl
    from tuneloop.models import encode_chat, load_tokenizer

    tokenizer = load_tokenizer(str(work / "model"))
    return [encode_chat(tokenizer, r["messages"], 512) for r in read_jsonl(work / name)]


def val_loss(model, examples) -> float:
    """Mean loss per answer token over the validation rows, one row at a time: the same for every variant."""
    import torch
    import torch.nn.functional as F

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for e in examples:
            logits = model(input_ids=torch.tensor([e.input_ids]), use_cache=False).logits[0, :-1]
            labels = torch.tensor(e.labels[1:])
            total += float(F.cross_entropy(logits.float(), labels, ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    return total / count


# --- one run (child process) --------------------------------------------------------------------

def run_tuneloop(work: Path, method: str, settings: dict, args) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tuneloop.config import LoraConfig, ModelConfig, TrainConfig
    from tuneloop.train.trainer import train

    cfg = TrainConfig(method=method, epochs=args.epochs, batch_size=args.batch_size, max_seq_len=512,
                      learning_rate=args.full_lr if method == "full" else args.lr, scheduler="linear", warmup_ratio=0.0,
                      weight_decay=0.0, max_grad_norm=1.0, seed=0, tensorboard=False, precision="fp32",
                      lora=LoraConfig(dropout=args.dropout), **settings)
    out = work / f"out-{os.getpid()}"
    summary = train(cfg, ModelConfig(name=str(work / "model")), work / "data", out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    if method == "full":
        model = AutoModelForCausalLM.from_pretrained(out / "model")
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(work / "model"), out / "adapter")
    return {"loop_s": summary["loop_s"], "steps": summary["steps"], "peak_rss_mb": peak,
            "train_loss": statistics.mean(r["train_loss"] for r in records[-10:]),
            "val_loss": val_loss(model, encoded(work, "val.jsonl"))}


def run_trl(work: Path, method: str, settings: dict, args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from tuneloop.models import load_tokenizer

    tokenizer = load_tokenizer(str(work / "model"))
    train_set = Dataset.from_list([{"input_ids": e.input_ids, "labels": e.labels} for e in encoded(work, "data/train.jsonl")])
    config = SFTConfig(
        output_dir=str(work / f"trl-{os.getpid()}"), per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs, learning_rate=args.full_lr if method == "full" else args.lr,
        lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, seed=0,
        bf16=False, fp16=False, use_cpu=True, max_length=None, logging_steps=1, save_strategy="no",
        eval_strategy="no", report_to="none", dataloader_num_workers=0, **settings,
    )
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.float32)
    model.config.use_cache = False  # with the cache on, padding-free rows would attend across examples
    lora = None if method == "full" else LoraConfig(r=16, lora_alpha=32, lora_dropout=args.dropout, target_modules="all-linear",
                                                    task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=config, train_dataset=train_set, processing_class=tokenizer, peft_config=lora)
    tick = time.perf_counter()
    trainer.train()
    loop_s = time.perf_counter() - tick
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"loop_s": loop_s, "steps": trainer.state.global_step, "peak_rss_mb": peak,
            "train_loss": statistics.mean(losses[-10:]), "val_loss": val_loss(trainer.model, encoded(work, "val.jsonl"))}


def child(args) -> None:
    started = time.perf_counter()
    trainer, method, settings = VARIANTS[args.child]
    work = Path(args.work)
    run = run_tuneloop if trainer == "tuneloop" else run_trl
    result = run(work, method, settings, args)
    print("RESULT " + json.dumps({**result, "process_s": time.perf_counter() - started}), flush=True)


# --- the comparison ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated, from: " + ", ".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1, help="alternate the variants this many times (median reported)")
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--val-rows", type=int, default=40)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate (both sides)")
    parser.add_argument("--full-lr", type=float, default=1e-4, help="full fine-tuning learning rate (both sides)")
    parser.add_argument("--vocab", type=int, default=49152, choices=(16384, 49152), help="the model's vocabulary size")
    parser.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (both sides)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    variants = args.variants.split(",")
    work = Path(tempfile.mkdtemp(prefix="train-vs-trl-"))
    prepare(work, args.train_rows, args.val_rows, args.vocab)
    examples = encoded(work, "data/train.jsonl")
    tokens = sum(len(e.input_ids) for e in examples)
    stats = {"rows": len(examples), "tokens": tokens, "targets": sum(sum(x != -100 for x in e.labels) for e in examples),
             "roofline": matmul_roofline(), "flops": training_flops(examples, args.vocab)}
    print(f"data: {stats['rows']} rows, {tokens} tokens, {stats['targets'] / tokens:.0%} of them answer tokens; "
          f"matmul roofline {stats['roofline'] / 1e9:.1f} GFLOP/s")
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for round_ in range(args.rounds):
        for variant in variants:
            result = _run_child(variant, work, args)
            result["tokens_per_s"] = tokens * args.epochs / result["loop_s"]
            runs[variant].append(result)
            print(f"round {round_ + 1} {variant}: {result['tokens_per_s']:.0f} tok/s, {result['peak_rss_mb']:.0f} MB, "
                  f"val loss {result['val_loss']:.4f}", flush=True)
    table = _table(runs, stats, args)
    print(table)
    if not args.no_write:
        _write_section(args.out, _heading(args), table)


def matmul_roofline(seconds: float = 3.0) -> float:
    """The best fp32 matmul rate (FLOP/s) this machine reaches at the model's shapes, with all threads."""
    import torch

    best = 0.0
    for n, k, m in [(4096, 384, 1024), (4096, 1024, 384), (4096, 384, 384)]:
        a, b = torch.randn(n, k), torch.randn(k, m)
        for _ in range(3):
            a @ b
        tick, count = time.perf_counter(), 0
        while time.perf_counter() - tick < seconds / 3:
            a @ b
            count += 1
        best = max(best, 2 * n * k * m * count / (time.perf_counter() - tick))
    return best


def training_flops(examples: list, vocab: int) -> float:
    """Model FLOPs of one epoch of LoRA training (no recomputation counted), the numerator of MFU.

    Per token and decoder layer: the linear layers forward (2 x weights) and their input gradients
    backward (2 x weights; frozen weights get no weight gradient), attention scores and values over the
    token's own example (causal: 4 x position x head dims, forward, twice that backward). The output head
    runs on answer tokens only: forward and input gradient, 4 x hidden x vocabulary. LoRA's own
    matrices are small (r 16) and not counted.
    """
    d, ffn, layers = MODEL["hidden_size"], MODEL["intermediate_size"], MODEL["num_hidden_layers"]
    kv = d // MODEL["num_attention_heads"] * MODEL["num_key_value_heads"]
    weights = d * d * 2 + d * kv * 2 + 3 * d * ffn  # q, o; k, v; gate, up, down
    total = 0.0
    for e in examples:
        n = len(e.input_ids)
        attention = 4 * d * n * (n + 1) / 2  # sum over positions of 4 x position x d
        total += layers * (4 * weights * n + 3 * attention)
        total += 4 * d * vocab * sum(x != -100 for x in e.labels[1:])
    return total


def _heading(args) -> str:
    return f"{SECTION} ({args.vocab // 1000}k vocabulary, LoRA dropout {args.dropout:g})"


def _run_child(variant: str, work: Path, args) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--work", str(work), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--full-lr", str(args.full_lr),
               "--vocab", str(args.vocab), "--dropout", str(args.dropout)]
    done = subprocess.run(command, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"{variant} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(line.removeprefix("RESULT "))


def _median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _table(runs: dict[str, list[dict]], stats: dict, args) -> str:
    import peft
    import torch
    import transformers
    import trl

    rows = ["| variant | non-pad tokens/s | MFU | loop (s) | process (s) | peak RSS (MB) | train loss (last 10 steps) | val loss |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for variant, results in runs.items():
        mfu = f"{stats['flops'] / _median(results, 'loop_s') / stats['roofline']:.0%}" if VARIANTS[variant][1] == "lora" else "-"
        rows.append(f"| {LABELS[variant]} | {_median(results, 'tokens_per_s'):,.0f} | {mfu} | {_median(results, 'loop_s'):.1f} | "
                    f"{_median(results, 'process_s'):.1f} | {_median(results, 'peak_rss_mb'):,.0f} | "
                    f"{_median(results, 'train_loss'):.4f} | {_median(results, 'val_loss'):.4f} |")
    ratios = []
    for ours, peer in [("tuneloop", "trl-default"), ("tuneloop", "trl-best"), ("tuneloop", "tuneloop-padded"), ("tuneloop", "tuneloop-plain"),
                       ("tuneloop-grouped", "tuneloop"), ("tuneloop-grouped", "trl-best"), ("tuneloop-full", "trl-default-full")]:
        if ours in runs and peer in runs:
            a, b = runs[ours], runs[peer]
            ratios.append(f"- {LABELS[ours]} / {LABELS[peer]}: tokens/s **{_median(a, 'tokens_per_s') / _median(b, 'tokens_per_s'):.2f}x**, "
                          f"peak RSS {_median(a, 'peak_rss_mb') / _median(b, 'peak_rss_mb'):.2f}x, "
                          f"val loss {_median(a, 'val_loss') / _median(b, 'val_loss') - 1:+.1%}")
    options = [f"--variants {','.join(runs)}", f"--vocab {args.vocab}", f"--dropout {args.dropout:g}",
               f"--train-rows {args.train_rows}", f"--rounds {args.rounds}"]
    command = "`.venv/bin/python benchmarks/train_vs_trl.py " + " ".join(options) + "`"
    return "\n".join([
        _heading(args), "",
        f"Command: {command} ({date.today()})", "",
        f"{os.cpu_count()} CPU threads ({platform.processor() or platform.machine()}); torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}, trl {trl.__version__}. Model: Llama "
        f"{MODEL['hidden_size']} hidden x {MODEL['num_hidden_layers']} layers, vocabulary {args.vocab:,} (SmolLM2's tokenizer"
        f"{', cut to its first ' + format(args.vocab, ',') + ' ids' if args.vocab < 49152 else ''}), random "
        f"weights, fp32. Data: {stats['rows']} synthetic rows, {stats['tokens']:,} tokens, "
        f"{stats['targets'] / stats['tokens']:.0%} of them answer tokens (the only ones with loss). LoRA r 16 / alpha 32 / "
        f"dropout {args.dropout:g} on every linear layer, lr {args.lr:g} (full: {args.full_lr:g}), linear decay, batch {args.batch_size}, "
        f"{args.epochs:g} epoch(s), {args.rounds} round(s) alternating, median shown. MFU: the LoRA training's model FLOPs "
        f"(training_flops) per second over the fp32 matmul rate measured on this machine before the runs, "
        f"{stats['roofline'] / 1e9:.1f} GFLOP/s.", "",
        *rows, "", *ratios, "",
    ])


def _write_section(path: Path, heading: str, table: str) -> None:
    """Replace this configuration's section of RESULTS.md, keeping every other section."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(heading + "\n")
    if start >= 0:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + table + ("\n" + text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + table
    path.write_text(text.rstrip() + "\n")


if __name__ == "__main__":
    main()
