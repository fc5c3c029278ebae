"""Training speed and peak memory per method on one model, each method in a fresh process.

    .venv/bin/python benchmarks/train_speed.py --model smollm2-135m-instruct --methods lora
    python benchmarks/train_speed.py --model FOLDER --random-init --methods lora,dora,qlora,full   # GPU

Data: the shipped ticket-triage example (real chat rows, loss on answers). Reports non-pad tokens/s
(mean over steps after the first), peak memory (CUDA allocator peak on a GPU, peak RSS on CPU), the
pre-flight estimate beside it, and first/final training loss, as a markdown table on stdout.
`--random-init` builds the model from the folder's config.json with random weights (same shape and
cost; for machines where only the config and tokenizer travel).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = """
import json, sys
from pathlib import Path
from tuneloop.config import ModelConfig, TrainConfig
from tuneloop.train.trainer import train
cfg = TrainConfig.model_validate(json.loads(sys.argv[1]))
summary = train(cfg, ModelConfig(name=sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
print("RESULT " + json.dumps(summary))
"""


def prepare_data(folder: Path) -> Path:
    rows = []
    for line in (ROOT / "examples/ticket_triage/tickets.jsonl").read_text().splitlines():
        try:  # the example ships a few deliberately malformed rows for the data stage to reject
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    system = {"role": "system", "content": "Triage the support ticket. Reply with JSON only."}
    rows = [{"messages": [system, *r["messages"]]} for r in rows
            if isinstance(r, dict) and all(isinstance(m.get("content"), str) for m in r.get("messages", [None]) if isinstance(m, dict))
            and all(isinstance(m, dict) for m in r.get("messages", [None]))]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-32]))
    (folder / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[-32:]))
    return folder


def random_model(folder: Path, target: Path) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).save_pretrained(target)
    AutoTokenizer.from_pretrained(folder).save_pretrained(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--random-init", action="store_true")
    parser.add_argument("--methods", default="lora")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="train-speed-"))
    data = prepare_data(work)
    model = str(random_model(Path(args.model), work / "model")) if args.random_init else args.model
    print("| method | device | precision | tokens/s | peak memory (GiB) | pre-flight estimate (GiB) | loss first -> final |")
    print("|---|---|---|---:|---:|---:|---|")
    for method in args.methods.split(","):
        cfg = {"method": method, "max_steps": args.steps, "batch_size": args.batch_size, "max_seq_len": 384,
               "learning_rate": 2e-3 if method != "full" else 5e-5, "tensorboard": False}
        done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg), model, str(data), str(work / method)],
                              capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"| {method} | failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode} |||||")
            continue
        s = json.loads(line.removeprefix("RESULT "))
        print(f"| {method} | {s['device']} | {s['precision']} | {s['tokens_per_s']:,.0f} | {s['peak_memory_gb']:.2f} | "
              f"{s['estimated_peak_gb']:.2f} | {s['first_loss']:.3f} -> {s['final_loss']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
