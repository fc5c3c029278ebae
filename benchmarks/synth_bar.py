"""Issue 24's synthetic-data bar, end to end with the real CLI: `tuneloop serve` (the embedded
SmolLM2-135M-Instruct) as the teacher, 200 rows requested from 20 seed tickets, the synth command killed
half way and rerun, then `tuneloop data prepare` on every ticket plus the synthetic file.

    .venv/bin/python benchmarks/synth_bar.py [--out /tmp/synth-bar] [--rows 200]

Prints (and writes OUT/bar.json): requests asked of the server (from its request log, by status) against
requests planned, the synth report's counts, the data report's synthetic counts, and the overlap of kept synthetic
rows with the test split (exact keys and MinHash near duplicates at the data stage's threshold).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/synth-bar"))
    parser.add_argument("--rows", type=int, default=200)
    args = parser.parse_args()
    out = args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    example = ROOT / "examples" / "ticket_triage"
    tickets = example / "tickets.jsonl"
    (out / "seeds.jsonl").write_text("".join(tickets.read_text().splitlines(keepends=True)[:20]))
    pipeline = (example / "pipeline.yaml").read_text().replace("inputs: [tickets.jsonl]", f"inputs: [{tickets}]")
    pipeline = pipeline.replace("edge_cases: edge_cases.jsonl", f"edge_cases: {example / 'edge_cases.jsonl'}")
    pipeline = pipeline.replace("inputs: bias_probe.jsonl", f"inputs: {example / 'bias_probe.jsonl'}")
    port = _free_port()
    synth = (f"  synth: {{seeds: [{out / 'seeds.jsonl'}], rows: {args.rows}, max_chars: 300, per_request: 5,\n"
             f"          teacher: {{base_url: 'http://127.0.0.1:{port}/v1', model: smollm2-135m-instruct, max_tokens: 600, concurrency: 4, timeout_s: 600}}}}\n")
    (out / "pipeline.yaml").write_text(pipeline.replace("  seed: 0\n\ntrain:", f"  seed: 0\n{synth}\ntrain:", 1))
    log = out / "served.jsonl"
    server = subprocess.Popen([str(BIN / "tuneloop"), "serve", "--base", "smollm2-135m-instruct", "--port", str(port),
                               "--request-log", str(log), "--no-jobs", "--no-dashboard", "--max-tokens", "1024"],
                              stdout=open(out / "serve.log", "w"), stderr=subprocess.STDOUT)
    try:
        _wait_ready(port, server)
        command = [str(BIN / "tuneloop"), "data", "synth", str(out / "pipeline.yaml"), "--out", str(out / "synth.jsonl")]
        started = time.time()
        child = subprocess.Popen(command, stdout=open(out / "synth-1.log", "w"), stderr=subprocess.STDOUT, start_new_session=True)
        records = out / "synth.requests.jsonl"
        while child.poll() is None and _lines(records) < 20:  # about half of the ~45 requests
            time.sleep(0.5)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        killed_at = _lines(records)
        second = subprocess.run([*command, "--json"], capture_output=True, text=True)
        if second.returncode:
            raise SystemExit(second.stdout[-3000:] + second.stderr[-3000:])
        synth_report = json.loads(second.stdout.strip().splitlines()[-1])
        synth_s = time.time() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    prepared = subprocess.run([str(BIN / "tuneloop"), "data", "prepare", str(tickets), "--config", str(out / "pipeline.yaml"),
                               "--synthetic", str(out / "synth.jsonl"), "--out", str(out / "data"), "--json"], capture_output=True, text=True)
    if prepared.returncode:
        raise SystemExit(prepared.stdout[-3000:] + prepared.stderr[-3000:])
    data_report = json.loads(prepared.stdout.strip().splitlines()[-1])
    result = {"requests_planned": synth_report["requests"]["planned"], "requests_recorded_at_kill": killed_at,
              "requests_served": _lines(log), "served_by_status": _statuses(log), "synth": synth_report["rows"], "by_status": synth_report["requests"]["by_status"],
              "synth_wall_s": round(synth_s), "data_synthetic": data_report["synthetic"], "test_overlap": _overlap(out / "data")}
    (out / "bar.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


def _overlap(data: Path) -> dict:
    """Kept synthetic rows against the test split: equal exact keys, and the most similar test row's true
    Jaccard similarity of word 3-shingles (what the near-duplicate threshold, 0.8, estimates)."""
    from tuneloop.data.dedup import normalise, normalised_key, shingles
    from tuneloop.data.rowwork import dedup_text

    rows = {name: [json.loads(line) for line in (data / f"{name}.jsonl").read_text().splitlines()] for name in ("train", "test")}
    synthetic = [r for r in rows["train"] if r["metadata"]["source"] == "synthetic"]
    test = [set(shingles(normalise(dedup_text(r)), 3)) for r in rows["test"]]
    keys = {normalised_key(normalise(dedup_text(r))) for r in rows["test"]}
    nearest = []
    for row in synthetic:
        mine = set(shingles(normalise(dedup_text(row)), 3))
        nearest.append(max(len(mine & other) / max(len(mine | other), 1) for other in test))
    return {"kept_synthetic": len(synthetic), "exact_in_test": sum(normalised_key(normalise(dedup_text(r))) in keys for r in synthetic),
            "jaccard_to_nearest_test_row_max": round(max(nearest, default=0.0), 3),
            "at_or_over_0.8": sum(j >= 0.8 for j in nearest), "over_0.6": sum(j > 0.6 for j in nearest)}


def _statuses(path: Path) -> dict:
    counts: dict = {}
    for line in open(path):
        if line.strip():
            status = json.loads(line)["status"]
            counts[status] = counts.get(status, 0) + 1
    return counts


def _lines(path: Path) -> int:
    return sum(1 for line in open(path) if line.strip()) if path.is_file() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(port: int, server: subprocess.Popen) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited; see serve.log")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("the server did not start within 300 s")


if __name__ == "__main__":
    main()
