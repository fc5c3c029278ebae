"""Benchmark: `tuneloop data prepare` throughput and memory on N synthetic support tickets.

    .venv/bin/python benchmarks/data_prepare.py --rows 100000

Runs each configuration in a fresh subprocess (so peak RSS is per configuration) and prints a markdown
table. Bars (issue 3, 2 cores): >= 20,000 rows/s for read + validate + clean + PII + exact dedup +
split on 100k rows; near-dedup of 100k rows in under 60 s; memory not growing with file size beyond
what deduplication needs.
"""

from __future__ import annotations

import argparse
import json
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


def run_one(path: str, near: bool) -> dict:
    """In a child process: prepare the file and report time and peak memory."""
    from tuneloop.config import DataConfig, TaskConfig
    from tuneloop.data.prepare import prepare

    out = Path(tempfile.mkdtemp())
    cfg = DataConfig(dedup={"near": near}, seed=0)
    start = time.perf_counter()
    report = prepare([Path(path)], out, cfg, TaskConfig(label_fields=["category"]))
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"rows": report["rows_in"], "seconds": seconds, "peak_mb": peak_mb, "rejected": report["rejected"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], args.child[1] == "near")))
        return
    table = ["| rows | pipeline | seconds | rows/s | peak RSS (MB) | rejected |", "|---:|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = Path(tmp) / f"rows{n}.jsonl"
            path.write_text("\n".join(synthetic_rows(n)) + "\n")
            for mode, label in (("exact", "read+validate+clean+PII+exact dedup+split"), ("near", "the same + near dedup (MinHash LSH)")):
                child = subprocess.run([sys.executable, __file__, "--child", str(path), mode], capture_output=True, text=True, check=True)
                r = json.loads(child.stdout.strip().splitlines()[-1])
                table.append(f"| {r['rows']:,} | {label} | {r['seconds']:.1f} | {r['rows'] / r['seconds']:,.0f} | {r['peak_mb']:.0f} | {r['rejected']:,} |")
                print(table[-1], file=sys.stderr)
    print("\n".join(table))


if __name__ == "__main__":
    main()
