"""Benchmark: `tuneloop data prepare` throughput and memory on N synthetic support tickets.

    .venv/bin/python benchmarks/data_prepare.py --rows 100000
    .venv/bin/python benchmarks/data_prepare.py --rows 1000000 --modes near   # the 1M near-dedup figure

Runs each configuration in a fresh subprocess (so peak RSS is per configuration) and prints a markdown
table. Peak RSS is the main process (which holds the dedup index); the worker processes' peak is the
largest of them. Bars (issues 3 and 21, 2 cores): >= 20,000 rows/s on 100k rows for read + validate +
clean + PII + exact dedup + split, and with near dedup too; near dedup of 1M rows in under 2 minutes;
memory not growing with file size beyond what deduplication needs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPENERS = ["Hi,", "Hello team,", "Dear support,", "", "Good morning,"]
ISSUES = [
    "my order {order} never arrived and tracking has not moved in {n} days",
    "I was charged twice for the {product}, please refund one payment",
    "the {product} stops working after {n} minutes and shows error {code}",
    "I cannot log in since the password reset, the link says expired",
    "the {product} is the wrong size, can I exchange it for a larger one",
]
PRODUCTS = ["AeroBlend blender", "Nimbus headphones", "Terra backpack", "Orbit speaker", "Glide mouse", "Lumen webcam"]
WORDS = "please urgent thanks again really today soon asap whenever quickly kindly also still now".split()


MODES = {"exact": "read+validate+clean+PII+exact dedup+split", "near": "the same + near dedup (MinHash LSH)",
         "dedup": "near dedup stage alone, one process: normalise+sketch+index"}


def synthetic_rows(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        issue = rng.choice(ISSUES).format(order=f"#A{rng.randint(10000, 99999)}", n=rng.randint(2, 30),
                                           product=rng.choice(PRODUCTS), code=f"E{rng.randint(100, 999)}")
        extra = " ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
        contact = rng.choice(["", f" Mail me at user{i}@example.com.", f" Call +1 415-555-{rng.randint(1000, 9999)}."])
        text = f"{rng.choice(OPENERS)} {issue}. {extra}.{contact} Ticket {i}."
        answer = json.dumps({"category": rng.choice(["billing", "shipping", "technical", "account", "returns"]), "n": i})
        lines.append(json.dumps({"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]}))
        if rng.random() < 0.02:  # exact duplicates, as real exports have
            lines.append(lines[-1])
    return lines[:n]


def run_dedup_stage(path: str) -> dict:
    """In a child process: only the near-dedup stage (normalise, sketch, find-or-add), in one process, on the
    rows' dedup texts; what the data stage does for near duplicates, without the rest of the row work."""
    import orjson

    from tuneloop.data.dedup import NearDuplicateIndex, normalise
    from tuneloop.data.rowwork import CHUNK, NUM_PERM

    index = NearDuplicateIndex(0.8, num_perm=NUM_PERM)
    start_cpu, start, rows, dropped = time.process_time(), time.perf_counter(), 0, 0
    with open(path, "rb") as handle:
        while chunk := [line for _, line in zip(range(CHUNK), handle)]:
            texts = [normalise("\n".join(m["content"] for m in orjson.loads(line)["messages"])) for line in chunk]
            for sketch in index.sketch_many(texts):
                dropped += index.find_or_add(f"{path}:{rows}", sketch=sketch) is not None
                rows += 1
    return {"rows": rows, "seconds": time.perf_counter() - start, "cpu": time.process_time() - start_cpu,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "workers_mb": 0, "rejected": dropped}


def run_one(path: str, near: bool) -> dict:
    """In a child process: prepare the file and report time and peak memory."""
    from tuneloop.config import DataConfig, TaskConfig
    from tuneloop.data.prepare import prepare

    out = Path(tempfile.mkdtemp())
    cfg = DataConfig(dedup={"near": near}, seed=0)
    times = os.times()
    start_cpu = times.user + times.system + times.children_user + times.children_system
    start = time.perf_counter()
    report = prepare([Path(path)], out, cfg, TaskConfig(label_fields=["category"]))
    seconds = time.perf_counter() - start
    main, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of every process of the run: on a machine shared with other work, wall time alone misleads.
    cpu = main.ru_utime + main.ru_stime + workers.ru_utime + workers.ru_stime - start_cpu
    return {"rows": report["rows_in"], "seconds": seconds, "cpu": cpu, "peak_mb": main.ru_maxrss / 1024,
            "workers_mb": workers.ru_maxrss / 1024, "rejected": report["rejected"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=list(MODES), help="which configurations to run")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode = args.child[1]
        print(json.dumps(run_dedup_stage(args.child[0]) if mode == "dedup" else run_one(args.child[0], mode == "near")))
        return
    table = ["| rows | pipeline | seconds | rows/s | CPU s | peak RSS (MB) | workers' peak RSS (MB) | rejected |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = Path(tmp) / f"rows{n}.jsonl"
            path.write_text("\n".join(synthetic_rows(n)) + "\n")
            for mode in args.modes:
                child = subprocess.run([sys.executable, __file__, "--child", str(path), mode], capture_output=True, text=True, check=True)
                r = json.loads(child.stdout.strip().splitlines()[-1])
                table.append(f"| {r['rows']:,} | {MODES[mode]} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | {r['cpu']:.1f} | {r['peak_mb']:.0f} "
                             f"| {r['workers_mb']:.0f} | {r['rejected']:,} |")
                print(table[-1], file=sys.stderr)
    print("\n".join(table))


if __name__ == "__main__":
    main()
