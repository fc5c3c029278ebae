"""What each rank holds under DDP and under FSDP (`train.distributed`), measured inside the ranks.

    .venv/bin/python benchmarks/fsdp_memory.py                      # 2 CPU ranks, full and LoRA
    .venv/bin/python benchmarks/fsdp_memory.py --layers 8 --hidden 256 --methods full,lora --ranks 2

A random Llama is built from a config (vocabulary of the embedded SmolLM2 tokenizer, tied embeddings) and
trained for a few steps under `torchrun --standalone --nproc_per_node RANKS`, once per method and mode, the
same setup and step as trainer.py (build_model, fsdp.shard, the trainer's optimizer step). Just before the
last optimizer step every rank sums the bytes of the tensors it really holds: parameters (their local
shards under FSDP), gradients, AdamW moments. RSS after the run and peak RSS (ru_maxrss) are per rank and
include the ~0.5 GB of imported libraries, the transient all-gathered groups and, for the peak, the whole
model every rank loads before it is sharded. Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = r'''
import json, math, resource, sys
from pathlib import Path
import torch
from torch.distributed.tensor import DTensor
from transformers import set_seed
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.models import load_tokenizer
from tuneloop.train import trainer
from tuneloop.train.distributed import World
from tuneloop.train.fsdp import shard
from tuneloop.train.methods import build_model, placement, trainable_parameters
from tuneloop.train.objectives import build_objective

cfg = TrainConfig.model_validate(json.loads(sys.argv[1]))
model_dir, data_dir = sys.argv[2], Path(sys.argv[3])
world = World()
where = placement(cfg, world.local_rank)
set_seed(cfg.seed)
objective = build_objective(load_tokenizer(model_dir), data_dir, cfg)
model = build_model(ModelConfig(name=model_dir), cfg, where)
objective.attach(model)
sharded = cfg.distributed == "fsdp"
if sharded:
    model = shard(model, bf16=where.bf16, cpu_offload=False)
params = trainable_parameters(model)
optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, fused=True)
scheduler = trainer._scheduler(cfg, optimizer, cfg.max_steps)

def size(t):
    local = t.to_local() if isinstance(t, DTensor) else t
    return local.numel() * local.element_size()

held = {}
def measure(opt, args, kwargs):  # after backward, before the update: parameters, gradients and moments all exist
    held["params"] = sum(size(p) for p in model.parameters())
    held["grads"] = sum(size(p.grad) for p in model.parameters() if p.grad is not None)
    held["optimizer"] = sum(size(v) for state in opt.state.values() for v in state.values() if torch.is_tensor(v) and v.ndim)
optimizer.register_step_pre_hook(measure)

stream = trainer._micro_batches(objective)
micro = cfg.grad_accum * world.size
for step in range(cfg.max_steps):
    group = [next(stream) for _ in range(micro)][world.rank :: world.size]
    record = trainer._optimizer_step(objective, model, group, params, optimizer, scheduler, cfg, world, where, sharded)
held["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
held["rss"] = int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()
held["loss"] = record["train_loss"]
print("RESULT " + json.dumps({"rank": world.rank, **held}), flush=True)
world.close()
'''


def make_model(folder: Path, layers: int, hidden: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tuneloop.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 8 // 3, num_hidden_layers=layers,
                         num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, max_position_embeddings=1024,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def make_data(folder: Path) -> Path:
    rows = []
    for line in (ROOT / "examples/ticket_triage/tickets.jsonl").read_text().splitlines():
        try:  # the example ships a few deliberately malformed rows for the data stage to reject
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in row.get("messages", [None])):
            rows.append({"messages": row["messages"]})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:64]))
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="fsdp-memory-"))
    model, data = make_model(work / "model", args.layers, args.hidden), make_data(work / "data")
    child = work / "child.py"  # torchrun starts a script
    child.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    mb = 1024**2
    print("| method | distributed | params MB/rank | grads MB/rank | AdamW MB/rank | total MB/rank | RSS after MB/rank | "
          "peak RSS MB/rank | final loss |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    totals = {}
    for method in args.methods.split(","):
        for mode in ("ddp", "fsdp"):
            cfg = {"method": method, "distributed": mode, "max_steps": args.steps, "batch_size": 4, "grad_accum": 2, "max_seq_len": 256,
                   "learning_rate": 2e-3 if method != "full" else 5e-5, "tensorboard": False, "lora": {"r": 16, "dropout": 0.0}}
            done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.ranks),
                                   str(child), json.dumps(cfg), str(model), str(data)], capture_output=True, text=True, env=env)
            ranks = [json.loads(x.removeprefix("RESULT ")) for x in done.stdout.splitlines() if x.startswith("RESULT ")]
            if len(ranks) != args.ranks:
                print(f"| {method} | {mode} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode} ||||||")
                continue
            mean = {k: sum(r[k] for r in ranks) / len(ranks) for k in ("params", "grads", "optimizer", "rss", "peak_rss")}
            total = mean["params"] + mean["grads"] + mean["optimizer"]
            totals[(method, mode)] = (total, mean["params"], mean["peak_rss"])
            print(f"| {method} | {mode} | {mean['params'] / mb:,.1f} | {mean['grads'] / mb:,.2f} | {mean['optimizer'] / mb:,.2f} | "
                  f"{total / mb:,.1f} | {mean['rss'] / mb:,.0f} | {mean['peak_rss'] / mb:,.0f} | {ranks[0]['loss']:.4f} |", flush=True)
    print()
    for method in args.methods.split(","):
        if (method, "ddp") in totals and (method, "fsdp") in totals:
            (t_d, p_d, r_d), (t_f, p_f, r_f) = totals[(method, "ddp")], totals[(method, "fsdp")]
            print(f"- {method}: FSDP / DDP per rank: parameters **{p_f / p_d:.2f}x**, parameters+gradients+AdamW "
                  f"**{t_f / t_d:.2f}x**, peak RSS {r_f / r_d:.2f}x")


if __name__ == "__main__":
    main()
