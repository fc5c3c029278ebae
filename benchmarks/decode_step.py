"""What each serving lever gives: the time of one batched decode step, with each lever on and off.

    .venv/bin/python benchmarks/decode_step.py            # embedded SmolLM2-135M, batch 16

One process, the real engine's `Batch`: 16 ticket-triage prompts are prefilled together, then decode
steps are timed (median of `--steps`). Settings alternate round by round on the same prompts:
transformers' concatenating DynamicCache vs our growing cache, and row-major vs column-major weights
(`serve/column_major.py`), and transformers' forward vs the lean decode step (`serve/lean_decode.py`). Prints a markdown table; the figures belong to the "Serving throughput" notes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import DynamicCache

import tuneloop.serve.batch as batch_module
from tuneloop.models import load_model, load_tokenizer, resolve_model
from tuneloop.compat import growing_cache
from tuneloop.serve.batch import Batch
from tuneloop.serve.column_major import layout_for_decoding
from tuneloop.serve.generation import Generation, Sampling
from tuneloop.serve.lean_decode import LeanDecoder

ROOT = Path(__file__).resolve().parents[1]
SYSTEM = {"role": "system", "content": "Triage the support ticket. Reply with JSON only."}


def prompts(tokenizer, n: int) -> list[list[int]]:
    rows = []
    for line in (ROOT / "examples/ticket_triage/tickets.jsonl").read_text().splitlines():
        try:  # the example ships a few malformed rows on purpose
            rows.append([m for m in json.loads(line)["messages"] if m["role"] == "user"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    texts = [tokenizer.apply_chat_template([SYSTEM, *r], tokenize=False, add_generation_prompt=True) for r in rows[:n]]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def step_ms(model, tokenizer, ids: list[list[int]], steps: int, growing: bool, lean: LeanDecoder | None = None) -> float:
    batch_module.growing_cache = growing_cache if growing else (lambda config: DynamicCache(config=config))
    batch = Batch(model, tokenizer.pad_token_id, peft=False, lean=lean)
    batch.join([Generation(i, steps + 1, lambda *_: None, Sampling(temperature=0)) for i in ids])
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        batch.step(lambda job, token: False)
        times.append(time.perf_counter() - tick)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ref = resolve_model(args.model)
    tokenizer = load_tokenizer(ref)
    ids = prompts(tokenizer, args.batch)
    row_major, column_major, fused = load_model(ref), load_model(ref), load_model(ref)
    layout_for_decoding(column_major)
    layout_for_decoding(fused)
    lean = LeanDecoder.for_model(fused)  # re-stores q/k/v and gate/up as one buffer each: its own copy of the model
    settings = {
        "row-major weights, concatenating cache (before)": (row_major, False, None),
        "row-major weights, growing cache": (row_major, True, None),
        "column-major weights, concatenating cache": (column_major, False, None),
        "column-major weights, growing cache": (column_major, True, None),
        "column-major weights, growing cache, lean step (now)": (fused, True, lean),
    }
    results: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for name, (model, growing, step) in settings.items():
            results[name].append(step_ms(model, tokenizer, ids, args.steps, growing, step))
    before = statistics.median(results[next(iter(results))])
    print(f"Batch of {args.batch}, {args.steps} decode steps after a prefill of ~{sum(map(len, ids)) // len(ids)} tokens per row, "
          f"{torch.get_num_threads()} threads, median of {args.rounds} rounds\n")
    print("| setting | ms per decode step | vs before |\n|---|---:|---:|")
    for name, values in results.items():
        ms = statistics.median(values)
        print(f"| {name} | {ms:.0f} | {before / ms:.2f}x |")


if __name__ == "__main__":
    main()
