"""Structured outputs: what constrained decoding (`response_format` json_schema, llguidance masks inside the
continuous batch) costs per generated token, against the same requests unconstrained, on one server.

    .venv/bin/python benchmarks/structured_outputs.py
    .venv/bin/python benchmarks/structured_outputs.py --requests 16 --rounds 1 --no-write

One `tuneloop serve` subprocess (the embedded SmolLM2-135M-Instruct), the ticket-triage prompts of
serve_throughput.py (their system prompt asks for JSON), greedy, streamed. At each concurrency level the two
variants alternate over `--rounds` rounds (free first in odd rounds, constrained first in even ones), so
drift in the machine's speed falls on both; the schema is the ticket-triage example's output_schema.

Per-token latency is a request's time after its first token divided by the tokens after the first (the
decode step time it saw), the median over requests; tokens/s is all completion tokens over the wall time.
Also counts the answers that ended on their own (not cut at max_tokens) and, of those, the ones that parse
and satisfy the schema. Writes the "## Structured outputs" section of
benchmarks/RESULTS.md unless --no-write.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx
import jsonschema
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_throughput import ROOT, THREADS, cpu_name, free_port, publish, section, start_server, stop_server, ticket_prompts  # noqa: E402

SECTION = "## Structured outputs"
SCHEMA = yaml.safe_load((ROOT / "examples/ticket_triage/pipeline.yaml").read_text())["task"]["output_schema"]
FORMAT = {"type": "json_schema", "json_schema": {"name": "triage", "schema": SCHEMA, "strict": True}}


async def one(client: httpx.AsyncClient, model: str, messages: list[dict], max_tokens: int, constrained: bool) -> dict:
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, **({"response_format": FORMAT} if constrained else {})}
    started, first, parts, tokens, finish = time.perf_counter(), None, [], 0, None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {(await response.aread()).decode(errors='replace')}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            tokens = (chunk.get("usage") or {}).get("completion_tokens", tokens)
            for choice in chunk.get("choices", []):
                finish = choice.get("finish_reason") or finish
                if choice.get("delta", {}).get("content"):
                    first = first or time.perf_counter()
                    parts.append(choice["delta"]["content"])
    done = time.perf_counter()
    per_token = (done - first) / (tokens - 1) if first and tokens > 1 else None
    return {"latency": done - started, "per_token": per_token, "tokens": tokens, "valid": _valid("".join(parts)), "stopped": finish == "stop"}


async def load(url: str, model: str, prompts: list[list[dict]], max_tokens: int, concurrency: int, constrained: bool) -> dict:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600)) as client:
        await one(client, model, prompts[0], max_tokens, constrained)  # warm-up (compiles the schema once)

        async def limited(messages):
            async with gate:
                return await one(client, model, messages, max_tokens, constrained)

        started = time.perf_counter()
        answers = await asyncio.gather(*(limited(m) for m in prompts))
        return {"wall": time.perf_counter() - started, "answers": answers}


def _valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
        return True
    except (ValueError, jsonschema.ValidationError):
        return False


def summary(runs: list[dict]) -> dict:
    answers = [a for run in runs for a in run["answers"]]
    per_token = [a["per_token"] for a in answers if a["per_token"] is not None]
    return {"per_token_ms": statistics.median(per_token) * 1000, "tokens_s": sum(a["tokens"] for a in answers) / sum(r["wall"] for r in runs),
            "p50_latency": statistics.median(a["latency"] for a in answers), "tokens": statistics.mean(a["tokens"] for a in answers),
            "valid": sum(a["valid"] for a in answers), "stopped": sum(a["stopped"] for a in answers),
            "valid_stopped": sum(a["valid"] for a in answers if a["stopped"]), "n": len(answers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/RESULTS.md")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    prompts = ticket_prompts(args.requests)
    port = free_port()
    server = start_server(args.model, port, Path("/tmp") / f"structured-bench-{port}.log")
    url, results = f"http://127.0.0.1:{port}", {}
    try:
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            runs = {False: [], True: []}
            for round_ in range(args.rounds):
                for constrained in ((False, True) if round_ % 2 == 0 else (True, False)):
                    runs[constrained].append(asyncio.run(load(url, args.model, prompts, args.max_tokens, concurrency, constrained)))
                    print(f"c={concurrency} {'constrained' if constrained else 'free'} round {round_ + 1}: {runs[constrained][-1]['wall']:.1f} s")
            results[concurrency] = {name: summary(runs[c]) for name, c in (("free", False), ("constrained", True))}
    finally:
        stop_server(server)

    table = ["| setting | per-token latency (ms) | tokens/s | p50 latency (s) | mean tokens | ended (not max_tokens) | schema-valid of those |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for concurrency, pair in results.items():
        for name, row in pair.items():
            table.append(f"| {'response_format json_schema' if name == 'constrained' else 'unconstrained'} c={concurrency} | {row['per_token_ms']:.1f} | "
                         f"{row['tokens_s']:.1f} | {row['p50_latency']:.2f} | {row['tokens']:.1f} | {row['stopped']}/{row['n']} | {row['valid_stopped']}/{row['stopped']} |")
        ratio = pair["constrained"]["per_token_ms"] / pair["free"]["per_token_ms"]
        throughput = pair["constrained"]["tokens_s"] / pair["free"]["tokens_s"]
        notes.append(f"c={concurrency}: constrained / unconstrained per-token latency **{ratio:.2f}x** (median over requests); tokens/s {throughput:.2f}x")
    import torch
    import transformers

    header = [f"Command: `.venv/bin/python benchmarks/structured_outputs.py` ({time.strftime('%Y-%m-%d')})", "",
              f"{THREADS} CPU threads ({cpu_name()}, {platform.machine()}); torch {torch.__version__}, transformers {transformers.__version__}. "
              f"{args.model}, {args.requests} ticket-triage prompts x {args.rounds} rounds per variant, greedy, max_tokens {args.max_tokens}, streamed; "
              "the variants alternate on one server. Schema: the ticket-triage output_schema, compiled by llguidance."]
    publish(section(SECTION, header, table, notes), args.out, write=not args.no_write)


if __name__ == "__main__":
    main()
