"""tuneloop's server against llama.cpp's `llama-server` on the same weights, threads and prompts.

    .venv/bin/python benchmarks/serve_vs_llamacpp.py --llama-server PATH/TO/llama-server
    .venv/bin/python benchmarks/serve_vs_llamacpp.py --llama-server ... --threads 1 2 --max-tokens 16 --no-write

llama-server is built from the llama.cpp source that llama-cpp-python's sdist ships (no prebuilt binary is
assumed): `pip download llama-cpp-python --no-binary :all: --no-deps`, unpack, then in vendor/llama.cpp
`cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build
--target llama-server llama-quantize` (where the CPU has AMX that the machine does not enable, a Q8_0 file
dies with SIGILL: build with -DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AMX_INT8=OFF ... instead). The
embedded model is exported once with tuneloop's own GGUF writer as f32, the dtype our engine serves on CPU,
so both sides multiply the same numbers.

For each thread count the two servers run one after the other (never at once), each with that many
threads (llama-server `-t/-tb`, ours OMP_NUM_THREADS and TUNELOOP_THREADS), 16 parallel slots, greedy, the
same ticket-triage prompts and max_tokens, streamed through the same client, after one warm-up request per
concurrency. Reported per setting: requests/s, tokens/s, p50/p95 latency, p50 time to first token, and how
many answers are identical between the two servers.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch

from serve_throughput import (
    COLUMNS, ROOT, Setting, cells, console, cpu_name, free_port, publish, run_server_load, section, start_server,
    stop_server, ticket_prompts, wait_healthy,
)
from tuneloop.models import resolve_model
from tuneloop.models.gguf_export import export_gguf

SECTION = "## Serving against llama.cpp"


def start_llama(binary: Path, gguf: Path, port: int, threads: int, slots: int, log: Path) -> subprocess.Popen:
    cmd = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-t", str(threads), "-tb", str(threads),
           "-np", str(slots), "-c", str(slots * 1024), "--jinja", "--no-webui"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    return wait_healthy(proc, port, log, "llama-server", 300)


def measure(url: str, model: str, prompts, max_tokens: int, levels: list[int], label: str) -> list[Setting]:
    """Each concurrency level on its own prompts, after a warm-up prompt of its own: llama-server keeps every
    slot's prompt and reuses any common prefix (so does ours), so a prompt sent twice would be free the second
    time. A new connection per request: llama-server closes kept-alive connections after a few requests."""
    n = len(prompts) // (len(levels) + 1)
    return [asyncio.run(run_server_load(url, model, prompts[(i + 1) * n : (i + 2) * n], max_tokens, c, label,
                                        warmup=prompts[i], keepalive=False)) for i, c in enumerate(levels)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-server", type=Path, required=True)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    ref = str(resolve_model(args.model))
    prompts = ticket_prompts(args.requests * (len(args.concurrency) + 1))
    work = Path(tempfile.mkdtemp(prefix="serve-vs-llamacpp-"))
    gguf = export_gguf(Path(ref), work / "model.gguf", "f32")
    table = ["| " + " | ".join(["threads", *COLUMNS[:-1], "identical to the other server"]) + " |",
             "|---:|---|" + "---:|" * (len(COLUMNS) - 1)]
    notes = []
    for threads in args.threads:
        port = free_port()
        llama = start_llama(args.llama_server, gguf, port, threads, 16, work / f"llama-{threads}.log")
        try:
            theirs = measure(f"http://127.0.0.1:{port}", "model", prompts, args.max_tokens, args.concurrency, "llama-server")
        finally:
            stop_server(llama)
        os.environ.update(OMP_NUM_THREADS=str(threads), TUNELOOP_THREADS=str(threads))
        port = free_port()
        server = start_server(ref, port, work / f"tuneloop-{threads}.log")
        try:
            ours = measure(f"http://127.0.0.1:{port}", ref, prompts, args.max_tokens, args.concurrency, "tuneloop")
        finally:
            stop_server(server)
        port = free_port()
        server = start_server(ref, port, work / f"tuneloop-{threads}-no-prefix.log", extra=["--prefix-cache-mb", "0"])
        try:  # the prefix cache as a lever: the same c=1 run without it
            plain = measure(f"http://127.0.0.1:{port}", ref, prompts, args.max_tokens, [1], "tuneloop, prefix cache off")
        finally:
            stop_server(server)
        for a, b in zip(ours, theirs):
            a.identical = b.identical = sum(x.text == y.text for x, y in zip(a.answers, b.answers))
        table += [f"| {threads} | " + " | ".join(cells(s, args.requests)) + " |" for s in (*ours, *plain, *theirs)]
        notes.append(f"{threads} thread(s), c=1: prefix cache on / off p50 TTFT "
                     f"{ours[0].row()['p50 TTFT (s)'] / plain[0].row()['p50 TTFT (s)']:.2f}x, p50 latency "
                     f"{ours[0].row()['p50 latency (s)'] / plain[0].row()['p50 latency (s)']:.2f}x")
        for a, b in zip(ours, theirs):
            level = a.name.split()[-1]
            notes.append(f"{threads} thread(s), {level}: tuneloop / llama-server p50 latency "
                         f"**{a.row()['p50 latency (s)'] / b.row()['p50 latency (s)']:.2f}x**, req/s "
                         f"**{a.row()['req/s'] / b.row()['req/s']:.2f}x**, p50 TTFT "
                         f"{a.row()['p50 TTFT (s)'] / b.row()['p50 TTFT (s)']:.2f}x")
        console.print(*notes[-len(ours) - 1:], sep="\n")
    header = [
        f"Command: `.venv/bin/python benchmarks/serve_vs_llamacpp.py --llama-server PATH --threads "
        f"{' '.join(map(str, args.threads))} --max-tokens {args.max_tokens}` ({dt.date.today()})", "",
        f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}, transformers {version('transformers')}; llama.cpp "
        f"{_llama_version(args.llama_server)}, the source in llama-cpp-python's sdist, built with GGML_NATIVE. The embedded "
        f"SmolLM2-135M-Instruct as f32 on both sides (GGUF written by `tuneloop export --gguf f32`). {args.requests} "
        f"ticket-triage prompts per concurrency level (distinct across levels), greedy, max_tokens {args.max_tokens}, streamed; 16 slots / max batch 16; the servers "
        f"run one after the other.",
    ]
    publish(section(SECTION, header, table, notes), args.out, not args.no_write)


def _llama_version(binary: Path) -> str:
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30)
        line = next(x for x in (done.stdout + done.stderr).splitlines() if x.startswith("version"))
        return line.split(":", 1)[1].strip()
    except (OSError, StopIteration, subprocess.SubprocessError):
        return "unknown"


if __name__ == "__main__":
    main()
