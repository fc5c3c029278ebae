"""Serving under CPU contention: one request at a time to `tuneloop serve` while other processes burn every
core, against plain `model.generate` in the same conditions.

    .venv/bin/python benchmarks/serve_contention.py [--requests 4] [--max-tokens 32] [--no-write]

Burners: one busy Python loop per core, started before and stopped after each measurement. Each
setting runs in its own process: `generate` loads the model and answers the prompts one at a time; the
server answers the same prompts over HTTP, one at a time, after a warm-up request. Settings: the server as
it starts by default, and with OMP_WAIT_POLICY=PASSIVE and =ACTIVE (OpenMP threads that sleep at once /
spin at barriers), to show which way spinning cuts. Also the same without burners, so what the contention
costs shows. Writes "## Serving under CPU contention" in benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import ROOT, THREADS, cpu_name, free_port, publish, section, stop_server, ticket_prompts  # noqa: E402

SECTION = "## Serving under CPU contention"
GENERATE = """
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
from tuneloop.models import load_model, load_tokenizer, render_prompt
prompts, max_tokens = json.loads(sys.argv[2]), int(sys.argv[3])
tokenizer, model = load_tokenizer("smollm2-135m-instruct"), load_model("smollm2-135m-instruct")
times = []
for i, messages in enumerate([prompts[0], *prompts]):
    ids = tokenizer(render_prompt(tokenizer, messages), return_tensors="pt", add_special_tokens=False)
    started = time.perf_counter()
    with torch.inference_mode():
        model.generate(**ids, max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False)
    if i:  # the first is a warm-up
        times.append([time.perf_counter() - started, max_tokens])
print(json.dumps(times))
"""


@contextmanager
def burners(on: bool):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(THREADS if on else 0)]
    try:
        time.sleep(1 if on else 0)
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def run_generate(prompts, max_tokens: int) -> list[float]:
    import json

    out = subprocess.run([sys.executable, "-c", GENERATE, str(ROOT / "src"), json.dumps(prompts), str(max_tokens)],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_server(prompts, max_tokens: int, env: dict[str, str], timeout: float) -> list[float]:
    port = free_port()
    log = Path("/tmp") / f"contention-{port}.log"
    full = {**os.environ, **env, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "tuneloop.cli", "serve", "--base", "smollm2-135m-instruct", "--port", str(port), "--request-log", "off",
           "--no-run-jobs"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=full, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        times = []
        for i, messages in enumerate([prompts[0], *prompts]):
            body = {"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": max_tokens, "temperature": 0}
            started = time.perf_counter()
            try:
                response = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=timeout)
                response.raise_for_status()
                elapsed, tokens = time.perf_counter() - started, response.json()["usage"]["completion_tokens"]
            except httpx.TimeoutException:
                elapsed, tokens = float("inf"), 1
            if i:
                times.append([elapsed, tokens])
        return times
    finally:
        stop_server(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    prompts = ticket_prompts(args.requests)
    rows = []
    for contended in (False, True):
        with burners(contended):
            label = "burners on every core" if contended else "idle"
            rows.append((f"generate, {label}", run_generate(prompts, args.max_tokens)))
            for name, env in (("server (default)", {}), ("server, OMP_WAIT_POLICY=PASSIVE", {"OMP_WAIT_POLICY": "PASSIVE"}),
                              ("server, OMP_WAIT_POLICY=ACTIVE", {"OMP_WAIT_POLICY": "ACTIVE"})):
                rows.append((f"{name}, {label}", run_server(prompts, args.max_tokens, env, args.timeout)))
            print("\n".join(f"{n}: {[(round(t, 2), k) for t, k in ts]}" for n, ts in rows[-4:]))
    table = ["| setting | median latency (s) | worst (s) | median ms per token | timed out |", "|---|---:|---:|---:|---:|"]
    per_token = {name: statistics.median(t / n * 1000 for t, n in times) for name, times in rows}
    for name, times in rows:
        done = [t for t, _ in times if t != float("inf")]
        table.append(f"| {name} | {statistics.median(t for t, _ in times):.2f} | {max(done) if done else float('nan'):.2f} | "
                     f"{per_token[name]:.1f} | {len(times) - len(done)}/{len(times)} |")
    notes = [f"{name} / generate under the same load, per token: **{per_token[name] / per_token['generate, ' + name.split(', ')[-1]]:.2f}x**"
             for name, _ in rows if not name.startswith("generate")]
    header = [f"Command: `.venv/bin/python benchmarks/serve_contention.py` ({time.strftime('%Y-%m-%d')})", "",
              f"{THREADS} CPU threads ({cpu_name()}); the embedded SmolLM2-135M-Instruct, {args.requests} ticket prompts one at a "
              f"time, greedy, exactly {args.max_tokens} new tokens for generate (max_tokens for the server), --timeout {args.timeout:g} s; "
              f"burners: {THREADS} busy Python loops."]
    publish(section(SECTION, header, table, notes), args.out, write=not args.no_write)


if __name__ == "__main__":
    main()
