"""Commands that chain stages: run, loop, demo."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.artifacts import new_run_dir
from tuneloop.cli.common import DEMO_CONFIG, Json, Out, _emit, _quiet_libraries
from tuneloop.config import PipelineConfig, load_config
from tuneloop.errors import TuneloopError
from tuneloop.ui import console
from tuneloop.cli.monitoring import _summary_table


# --- pipelines -----------------------------------------------------------------------------------
def run_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    out: Out = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Override train.max_steps.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test rows.")] = None,
    as_json: Json = False,
) -> None:
    """Run the whole pipeline: data -> train -> eval -> register."""
    result, _ = _run_pipeline(config, out, max_steps, limit)
    from tuneloop.pipelines.run import serve_hint

    console.print(serve_hint(result["model"]))
    _emit(result, as_json)


def _run_pipeline(config: Path, out: Path | None, max_steps: int | None, limit: int | None,
                  traffic: bool | None = None) -> tuple[dict, PipelineConfig]:
    """`traffic`: None runs the `run` pipeline; True/False the demo, with or without its traffic burst."""
    overrides = {k: v for k, v in {"train.max_steps": max_steps, "eval.limit": limit}.items() if v is not None}
    cfg = load_config(config, overrides)  # before the heavy imports: a config mistake is reported at once
    run_dir = out or new_run_dir(Path("runs"), cfg.name)
    _quiet_libraries()
    if traffic is None:
        from tuneloop.pipelines.run import run_pipeline

        result = run_pipeline(cfg, run_dir)
    else:
        from tuneloop.pipelines.demo import run_demo

        result = run_demo(cfg, run_dir, traffic)
    verdict = "[green]objective met" if result["objective_passed"] else "[red]objective NOT met"
    console.print(f"{verdict}[/] in {result['wall_s']:.0f} s; run directory {result['run_dir']}")
    return result, cfg


def loop_cmd(config: Annotated[Path, typer.Argument(help="Pipeline YAML.")], out: Out = None, as_json: Json = False) -> None:
    """One round of the loop: feedback + data -> train -> evaluate against production -> register -> promote if better."""
    cfg = load_config(config)
    from tuneloop.pipelines.loop import run_loop

    _quiet_libraries()
    result = run_loop(cfg, out or new_run_dir(Path("runs"), f"{cfg.name}-loop"))
    _emit(result, as_json)
    if not result["promoted"]:
        raise typer.Exit(1)


def demo_cmd(out: Out = None, max_steps: Annotated[Optional[int], typer.Option(help="Override train.max_steps.")] = None,
             limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test rows.")] = None,
             traffic: Annotated[bool, typer.Option(help="End with a simulated traffic burst and its monitoring report.")] = True,
             as_json: Json = False) -> None:
    """The whole loop offline on the embedded SmolLM2-135M-Instruct and the support-ticket example."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo needs ships with the install
    if not DEMO_CONFIG.is_file():
        raise TuneloopError(f"{DEMO_CONFIG}: demo config not found; run the demo from a tuneloop checkout")
    result, _ = _run_pipeline(DEMO_CONFIG, out, max_steps, limit, traffic=traffic)
    burst = result.pop("traffic", None)
    if burst:
        console.print(_summary_table(burst["summary"]))
        console.print(f"HTTP statuses {burst['statuses']}; monitoring report -> {burst['files'][-1]}")
    from tuneloop.pipelines.run import serve_hint

    console.print(serve_hint(result["model"]))
    _emit(result, as_json)
