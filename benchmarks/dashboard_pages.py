"""How long each dashboard page takes on a large site: 1,000 runs and 100,000 logged requests.

    python benchmarks/dashboard_pages.py [--runs 1000] [--requests 100000] [--repeat 5]

Builds the tests' site once (a tiny model trained from a config), copies its run's manifests, reports,
metrics and samples (not its weights) into `--runs` run folders, logs `--requests` requests over the last
7 days, serves it all with `tuneloop serve`'s app on 127.0.0.1 and times every page (median and worst of
`--repeat` requests, signed in, server-side render plus transfer). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))
KEEP = ("manifest.json", "report.json", "report.html", "metrics.jsonl", "results.json", "samples.jsonl", "loss.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tuneloop-ui-bench-"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["TUNELOOP_HOME"] = str(work / "home")
    import httpx

    from tests.conftest import make_tiny_model, running
    from tests.dashboard.site import build_site
    from tuneloop.db.requestlog import RequestStore
    from tuneloop.models import load_tokenizer
    from tuneloop.server import ServeOptions, build_app

    model = make_tiny_model(work / "tiny-model", load_tokenizer("smollm2-135m-instruct"))
    site = build_site(work / "site", model, requests=0)
    for i in range(args.runs - 1):
        for stage in ("data", "train", "eval"):
            target = site.runs / f"run-{i:04d}" / stage
            target.mkdir(parents=True)
            for name in KEEP:
                if (site.run.root / stage / name).is_file():
                    shutil.copy(site.run.root / stage / name, target / name)
    log_requests(RequestStore(site.registry_url), args.requests)
    app, _ = build_app(ServeOptions(base=str(model), registry=site.registry_url, runs=site.runs, api_keys=["key"], request_log="off"))
    pages = ["/ui", "/ui/runs", "/ui/runs?page=20", "/ui/runs/tiny-run", "/ui/registry", "/ui/registry/tiny", "/ui/jobs",
             "/ui/traffic?window=1h", "/ui/traffic?window=24h", "/ui/traffic?window=7d", "/ui/review", "/ui/playground"]
    rows = []
    with running(app) as url:
        client = httpx.Client(base_url=url, timeout=120)
        client.post("/ui/login", data={"key": "key", "next": "/ui"})
        for path in pages:
            times = []
            for _ in range(args.repeat):
                started = time.perf_counter()
                answer = client.get(path)
                times.append(time.perf_counter() - started)
                assert answer.status_code == 200, (path, answer.status_code)
            rows.append((path, statistics.median(times), max(times), len(answer.content)))
    print(f"\n## Dashboard pages: {args.runs:,} runs, {args.requests:,} logged requests\n")
    print(f"`python benchmarks/dashboard_pages.py --runs {args.runs} --requests {args.requests} --repeat {args.repeat}`\n")
    print("| page | median (ms) | worst (ms) | bytes |")
    print("|---|---:|---:|---:|")
    for path, median, worst, size in rows:
        print(f"| `{path}` | {median * 1000:.0f} | {worst * 1000:.0f} | {size:,} |")
    shutil.rmtree(work, ignore_errors=True)


def log_requests(store, n: int, batch: int = 10_000) -> None:
    rng = random.Random(0)
    now = dt.datetime.now(dt.UTC)
    for start in range(0, n, batch):
        store.log_requests([{
            "id": f"chatcmpl-{i}", "created_at": now - dt.timedelta(seconds=rng.uniform(0, 7 * 86400)),
            "model": "tiny@production", "variant": f"tiny:{1 + i % 2}", "status": 200 if rng.random() > 0.02 else 500,
            "latency_ms": rng.lognormvariate(5, 0.4), "ttft_ms": rng.uniform(20, 60), "prompt_tokens": 40, "completion_tokens": 12,
            "request": {"messages": [{"role": "user", "content": f"ticket {i}"}]},
            "response": '{"category": "billing", "priority": "low"}',
        } for i in range(start, min(start + batch, n))])


if __name__ == "__main__":
    main()
