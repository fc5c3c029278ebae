"""A small but complete site for the dashboard's tests (and the README's screenshots): a pipeline run of the
tiny model (data, train, eval) registered twice, a blind A/B export, a data review sample, and logged traffic."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import TINY_PIPELINE, ticket_rows, write_jsonl
from tuneloop.config import load_config
from tuneloop.data.review import write_review
from tuneloop.db import Database
from tuneloop.db.requestlog import RequestStore
from tuneloop.eval.ab import export_ab
from tuneloop.layout import PipelineDir
from tuneloop.pipelines.run import run_pipeline
from tuneloop.registry.lineage import register_run
from tuneloop.registry.store import Registry


@dataclass
class Site:
    root: Path
    runs: Path
    run: PipelineDir
    registry_url: str


def build_site(root: Path, model_dir: Path, requests: int = 300) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    write_jsonl(root / "data.jsonl", ticket_rows(50))
    url = f"sqlite:///{root / 'registry.db'}"
    config = root / "pipeline.yaml"
    # Enough steps for the tiny model to answer something (a random one answers nothing), so A/B pairs differ.
    text = TINY_PIPELINE.format(model=model_dir).replace("registry: {name: tiny}", f"registry: {{name: tiny, url: '{url}'}}")
    config.write_text(text.replace("max_steps: 3", "max_steps: 24").replace("learning_rate: 1.0e-3", "learning_rate: 1.0e-2"))
    cfg = load_config(config)
    run = PipelineDir(root / "runs" / "tiny-run")
    run_pipeline(cfg, run.root)
    registry = Registry(url)
    registry.set_alias("tiny", "production", 1, actor="test", reason="first version")
    register_run(registry, "tiny", run.train.root, run.eval.root, note="the same run, registered again")
    export_ab(run.eval.samples, run.eval.ab.root, "finetuned", "base")
    write_review(run.data.root, n=5, seed=0)
    _traffic(RequestStore(Database(url)), requests)
    return Site(root, root / "runs", run, url)


def _traffic(store: RequestStore, n: int) -> None:
    rng = random.Random(0)
    now = dt.datetime.now(dt.UTC)
    store.log_requests([{
        "id": f"chatcmpl-site-{i}", "created_at": now - dt.timedelta(minutes=rng.uniform(1, 600)),
        "model": "tiny@production", "variant": rng.choice(["tiny:1", "tiny:2"]), "status": 200 if rng.random() > 0.03 else 500,
        "latency_ms": rng.lognormvariate(5, 0.4), "ttft_ms": rng.uniform(20, 60), "prompt_tokens": 40, "completion_tokens": 12,
        "request": {"messages": [{"role": "user", "content": f"ticket {i}"}]},
        "response": '{"category": "billing", "priority": "low"}' if rng.random() > 0.1 else "Sorry, I cannot help.",
    } for i in range(n)])
