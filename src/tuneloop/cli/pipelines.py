"""Commands that chain stages: run, loop, demo."""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.artifacts import new_run_dir
from tuneloop.cli.common import DEMO_CONFIG, Json, Out, _emit, _quiet_libraries, check_inputs
from tuneloop.cli.monitoring import _summary_table
from tuneloop.config import PipelineConfig, load_config
from tuneloop.errors import TuneloopError
from tuneloop.ui import console


# --- pipelines -----------------------------------------------------------------------------------
Resume = Annotated[bool, typer.Option("--resume", help="Continue a stopped run: finished stages are reused, training "
                                                      "continues from its last checkpoint (with --out, or the newest run).")]


def run_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    out: Out = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Override train.max_steps.")] = None,
    limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test rows.")] = None,
    resume: Resume = False,
    as_json: Json = False,
) -> None:
    """Run the whole pipeline: data -> train -> eval -> register."""
    overrides = {k: v for k, v in {"train.max_steps": max_steps, "eval.limit": limit}.items() if v is not None}
    result, _ = _run_pipeline(config, overrides, out, resume, f"tuneloop run {config}")
    _summary(result)
    _emit(result, as_json)


def _run_pipeline(config: Path, overrides: dict, out: Path | None, resume: bool, again: str,
                  traffic: bool | None = None) -> tuple[dict, PipelineConfig]:
    """`traffic`: None runs the `run` pipeline; True/False the demo, with or without its traffic burst."""
    cfg = load_config(config, overrides)  # before the heavy imports: a mistake is reported at once
    check_inputs(cfg)
    run_dir = _run_dir(cfg, out, resume)
    cfg = _with_checkpoints(cfg)
    _quiet_libraries()
    console.print(f"run directory {run_dir}" + (" (resuming)" if resume else ""))
    try:
        with _signals_interrupt():
            if traffic is None:
                from tuneloop.pipelines.run import run_pipeline

                result = run_pipeline(cfg, run_dir, resume=resume)
            else:
                from tuneloop.pipelines.demo import run_demo

                result = run_demo(cfg, run_dir, traffic, resume=resume)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]interrupted.[/] Nothing finished is lost; continue with:\n  {again} --resume --out {run_dir}")
        raise typer.Exit(130) from None
    return result, cfg


def _run_dir(cfg: PipelineConfig, out: Path | None, resume: bool) -> Path:
    if out is not None:
        if resume and not out.is_dir():
            raise TuneloopError(f"--resume --out {out}: no such run directory")
        return out
    if not resume:
        return new_run_dir(Path("runs"), cfg.name)
    earlier = sorted((p for p in Path("runs").glob(f"{cfg.name}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    if not earlier:
        raise TuneloopError(f"--resume: no earlier run of '{cfg.name}' under ./runs; give its folder with --out")
    return earlier[-1]


def _with_checkpoints(cfg: PipelineConfig) -> PipelineConfig:
    """Pipelines checkpoint by default (every 10 steps), so that a stopped run can be resumed."""
    if cfg.train.save_every:
        return cfg
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"save_every": 10})})


@contextmanager
def _signals_interrupt():
    """SIGTERM stops a pipeline like Ctrl-C does: with the message saying how to resume."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _summary(result: dict) -> None:
    from tuneloop.pipelines.run import next_steps

    verdict = "[green]objective met" if result["objective_passed"] else "[red]objective NOT met"
    console.print(f"{verdict}[/] in {result['wall_s']:.0f} s")
    console.print(next_steps(result), highlight=False, soft_wrap=True)


def loop_cmd(config: Annotated[Path, typer.Argument(help="Pipeline YAML.")], out: Out = None, as_json: Json = False) -> None:
    """One round of the loop: feedback + data -> train -> evaluate against production -> register -> promote if better."""
    cfg = load_config(config)
    check_inputs(cfg)
    from tuneloop.pipelines.loop import run_loop

    _quiet_libraries()
    result = run_loop(cfg, out or new_run_dir(Path("runs"), f"{cfg.name}-loop"))
    _emit(result, as_json)
    if not result["promoted"]:
        raise typer.Exit(1)


def demo_cmd(out: Out = None, max_steps: Annotated[Optional[int], typer.Option(help="Override train.max_steps.")] = None,
             limit: Annotated[Optional[int], typer.Option(help="Evaluate only the first N test rows.")] = None,
             full: Annotated[bool, typer.Option("--full", help="The whole example: every training step, every test row, "
                                                            "the regression checks (about three times as long).")] = False,
             traffic: Annotated[bool, typer.Option(help="End with a simulated traffic burst and its monitoring report.")] = True,
             resume: Resume = False, as_json: Json = False) -> None:
    """The whole loop offline on the embedded SmolLM2-135M-Instruct and the support-ticket example (a few minutes)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything the demo needs ships with the install
    if not DEMO_CONFIG.is_file():
        raise TuneloopError(f"{DEMO_CONFIG}: demo config not found; run the demo from a tuneloop checkout")
    from tuneloop.pipelines.estimate import estimate_minutes
    from tuneloop.pipelines.quick import QUICK

    overrides = {} if full else dict(QUICK)
    overrides |= {k: v for k, v in {"train.max_steps": max_steps, "eval.limit": limit}.items() if v is not None}
    low, high = estimate_minutes("full" if full else "quick")
    console.print(f"tuneloop demo{' --full' if full else ''}: data -> train -> evaluate 4 systems -> register"
                  f"{' -> serve + monitor' if traffic else ''}; this machine should take about {low:.0f}-{high:.0f} min")
    result, _ = _run_pipeline(DEMO_CONFIG, overrides, out, resume, "tuneloop demo" + (" --full" if full else ""), traffic=traffic)
    burst = result.pop("traffic", None)
    if burst:
        console.print(_summary_table(burst["summary"]))
        console.print(f"HTTP statuses {burst['statuses']}; monitoring report -> {burst['files'][-1]}")
    _summary(result)
    _emit(result, as_json)


# --- migration -----------------------------------------------------------------------------------
import_app = typer.Typer(help="Move off a hosted fine-tune: its data, its answers as a golden set, and a config that retrains an open model.",
                         no_args_is_help=True)


@import_app.command("openai-compatible")
def import_openai_compatible(
    base_url: Annotated[str, typer.Option("--base-url", help="The provider's API, up to /v1.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the data, the golden answers and config.yaml.")],
    job: Annotated[Optional[str], typer.Option("--job", help="The fine-tuning job to import.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Or the fine-tuned model's name (ft:...): its job is found.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="The environment variable holding the provider's key.")] = None,
    base: Annotated[Optional[str], typer.Option("--base", help="The open model to retrain (default: the embedded model).")] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="Registry name for the retrained model (default: the job's suffix + -open).")] = None,
    tolerance: Annotated[float, typer.Option(help="The parity gate: how far below the hosted model the open one may score.", min=0, max=1)] = 0.05,
    max_tokens: Annotated[int, typer.Option(help="Longest golden answer, in tokens.", min=1, max=32768)] = 256,
    concurrency: Annotated[int, typer.Option(help="Requests to the provider at once.", min=1, max=64)] = 4,
    test_ratio: Annotated[float, typer.Option(help="Share of the rows held out as the protected test split.", min=0.01, max=0.5)] = 0.1,
    as_json: Json = False,
) -> None:
    """Import a finished job of any provider with OpenAI's fine-tuning API; then `tuneloop run OUT/config.yaml`."""
    from tuneloop.config import DEFAULT_MODEL
    from tuneloop.pipelines.migrate import import_hosted

    _quiet_libraries()
    _emit(import_hosted(base_url, out, job_id=job, model=model, api_key_env=api_key_env, base=base or DEFAULT_MODEL, name=name,
                        tolerance=tolerance, max_tokens=max_tokens, concurrency=concurrency, test_ratio=test_ratio), as_json)
