"""The round trip off a hosted fine-tune, on the embedded SmolLM2-135M-Instruct, with the commands a team runs.

    python benchmarks/hosted_round_trip.py [--out runs/round-trip] [--epochs 1]

1. A `tuneloop serve` (its own home and database) plays the hosted provider.
2. "The team's hosted fine-tune": the shipped ticket-triage rows (90% train, 10% validation) uploaded with the
   official openai client and trained there by a fine-tuning job (suffix `triage`).
3. `tuneloop import openai-compatible --model ft:...`: the job's files and hyperparameters, the hosted model's
   answers on the protected test split (the golden set), and `migrated/config.yaml`.
4. `tuneloop run migrated/config.yaml`: the open model retrained locally on the same data, evaluated beside the
   golden answers with the parity gate.
5. `tuneloop serve --alias FT_NAME=REF`: the retrained model answers a chat request sent under the old name.

Prints a markdown table (metric per system, the gate) and the wall time of each step; every folder stays
under --out. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai

ROOT = Path(__file__).resolve().parents[1]
TUNELOOP = str(Path(sys.executable).parent / "tuneloop")
METRICS = ("json_valid", "exact_match", "category_accuracy", "priority_accuracy", "rougeL", "semantic_similarity")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/round-trip"))
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    rows = _clean_rows(ROOT / "examples/ticket_triage/tickets.jsonl")
    random.Random(0).shuffle(rows)
    cut = int(len(rows) * 0.9)
    for name, part in (("train", rows[:cut]), ("validation", rows[cut:])):
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))

    provider, url = _serve(out / "provider.log", ["--registry", f"sqlite:///{out / 'provider.db'}", "--no-dashboard"],
                           {"TUNELOOP_HOME": str(out / "provider-home")})
    try:
        started = time.time()
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="none")
        train = api.files.create(file=(out / "train.jsonl").open("rb"), purpose="fine-tune")
        val = api.files.create(file=(out / "validation.jsonl").open("rb"), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=train.id, validation_file=val.id,
                                          suffix="triage", seed=0, hyperparameters={"n_epochs": args.epochs, "batch_size": 8,
                                                                                   "learning_rate_multiplier": 2.0})
        while (job := api.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(5)
        assert job.status == "succeeded", job.error
        timings["hosted job"] = time.time() - started
        print(f"hosted fine-tune {job.fine_tuned_model} in {timings['hosted job']:.0f} s", flush=True)

        started = time.time()
        _run([TUNELOOP, "import", "openai-compatible", "--base-url", f"{url}/v1", "--model", job.fine_tuned_model,
              "--out", str(out / "migrated")])
        timings["import"] = time.time() - started
    finally:
        provider.terminate()
        provider.wait(60)

    started = time.time()
    registry = f"sqlite:///{out / 'local.db'}"
    result = json.loads(_run([TUNELOOP, "run", str(out / "migrated/config.yaml"), "--out", str(out / "run"), "--json"],
                             env={"TUNELOOP_HOME": str(out / "local-home")}).splitlines()[-1])
    timings["tuneloop run"] = time.time() - started

    served, url = _serve(out / "local.log", ["--model", result["model"], "--alias", f"{job.fine_tuned_model}={result['model']}",
                                             "--no-jobs", "--no-dashboard"], {"TUNELOOP_HOME": str(out / "local-home")})
    try:
        answer = openai.OpenAI(base_url=f"{url}/v1", api_key="none").chat.completions.create(
            model=job.fine_tuned_model, messages=[{"role": "user", "content": "My parcel never arrived and it is urgent."}], max_tokens=64)
    finally:
        served.terminate()
        served.wait(60)
    _report(result, job.fine_tuned_model, answer, timings, registry)


def _clean_rows(path: Path) -> list[dict]:
    """The example's rows a provider accepts (it ships broken lines on purpose, to show the data stage's report)."""
    from tuneloop.data.file_check import check_file

    good = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        probe = Path("/tmp") / f"row-{os.getpid()}.jsonl"
        probe.write_text(line + "\n")
        if isinstance(row, dict) and check_file(probe) is None:
            good.append(row)
    return good


def _report(result: dict, old_name: str, answer, timings: dict, registry: str) -> None:
    systems = result["systems"]
    names = [s for s in ("base", "finetuned", "hosted") if s in systems]
    differences = json.loads((Path(result["run_dir"]) / "eval" / "results.json").read_text())["differences"].get("hosted", {})
    print("\n| metric | " + " | ".join(names) + " | finetuned - hosted [95% paired bootstrap] |\n|---|" + "---:|" * (len(names) + 1))
    for metric in METRICS:
        if all(metric in systems[s] for s in names):
            d = differences.get(metric)
            spread = f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]" if d else ""
            print(f"| {metric} | " + " | ".join(f"{systems[s][metric]:.3f}" for s in names) + f" | {spread} |")
    for gate in result["gates"]:
        print(f"\ngate `{gate['metric']}` {gate['gate']}: {gate['value']:+.3f} -> {'pass' if gate['passed'] else 'FAIL'}")
    print(f"\nserved under the old name {old_name!r} by {result['model']} ({registry}): {answer.choices[0].message.content!r}")
    print("wall: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))


def _serve(log: Path, extra: list[str], env: dict) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([TUNELOOP, "serve", "--port", str(port), *extra], stdout=log.open("w"), stderr=subprocess.STDOUT,
                               env={**os.environ, **env})
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        if process.poll() is not None:
            raise SystemExit(f"tuneloop serve exited: see {log}")
        time.sleep(1)
    raise SystemExit(f"tuneloop serve did not come up: see {log}")


def _run(command: list[str], env: dict | None = None) -> str:
    print("$ " + " ".join(command), flush=True)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if done.returncode not in (0, 1):  # 1: a gate failed, still a result
        raise SystemExit(done.stdout[-2000:] + done.stderr[-4000:])
    return done.stdout


if __name__ == "__main__":
    main()
