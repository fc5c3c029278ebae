"""`tuneloop demo`: the whole loop offline on the embedded model and the shipped support-ticket example.

The `run` pipeline (data -> train -> evaluate -> register), then the registered version served on
127.0.0.1 to a short burst of simulated traffic and the monitoring report of that burst (traffic.py).
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import PipelineConfig
from tuneloop.db import Database
from tuneloop.extras import require
from tuneloop.layout import PipelineDir
from tuneloop.pipelines.run import run_pipeline
from tuneloop.ui import console


def run_demo(cfg: PipelineConfig, run_dir: Path, traffic: bool = True, resume: bool = False) -> dict:
    """The pipeline's result; with `traffic`, also the burst's monitoring summary (`traffic`) and its overall row."""
    result = run_pipeline(cfg, run_dir, resume=resume)
    if traffic:
        require("serve", "the demo's traffic burst", instead="run the demo with --no-traffic")
        from tuneloop.pipelines.traffic import traffic_burst

        console.rule("[bold]then: serve it and watch simulated traffic")
        burst = traffic_burst(Database(cfg.registry.url), cfg.model.name, result["model"], PipelineDir(run_dir).data.root, PipelineDir(run_dir).monitor.root,
                              max_tokens=cfg.eval.max_new_tokens)
        result["traffic"] = burst
        result["monitoring"] = burst["summary"]["overall"]
    return result
