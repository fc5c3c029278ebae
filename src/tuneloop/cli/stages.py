"""Stage commands: data prepare, train, eval (and A/B export/import), export."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.artifacts import new_run_dir, read_manifest
from tuneloop.cli.common import Json, Out, _emit, _quiet_libraries, check_inputs, suggest_path
from tuneloop.config import PipelineConfig, load_config
from tuneloop.errors import TuneloopError
from tuneloop.layout import DataDir, EvalDir
from tuneloop.models.resolve import check_model
from tuneloop.ui import console

# --- data ----------------------------------------------------------------------------------------
data_app = typer.Typer(help="Validate, clean and split raw data.", no_args_is_help=True)


@data_app.command("prepare")
def data_prepare(
    inputs: Annotated[list[Path], typer.Argument(help="Data files: JSONL, JSON, CSV or Parquet (chat, prompt/completion, alpaca or preference rows).")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    config: Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML (data, task and model sections).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model whose tokenizer measures lengths (default: the config's).")] = None,
    as_json: Json = False,
) -> None:
    from tuneloop.config import ModelConfig

    cfg = load_config(config) if config else PipelineConfig()
    model_cfg = ModelConfig(name=model) if model else (cfg.model if config else None)
    for path in inputs:  # before the heavy imports: a typo fails in a second
        if not path.is_file():
            raise TuneloopError(f"{path}: input file not found{suggest_path(path)}")
    if model_cfg:
        check_model(model_cfg.name)
    from tuneloop.data.prepare import prepare

    _quiet_libraries()
    report = prepare(inputs, out, cfg.data, cfg.task, model_cfg)
    for source, forms in report["forms"].items():
        console.print(f"{source}: detected form {', '.join(f'{form} ({n})' for form, n in forms.items())}")
    console.print(f"{report['kept']} kept {report['splits']}, {report['rejected']} rejected {report['rejected_by_rule']}, "
                  f"PII redacted {report['pii_redacted']} -> {DataDir(out).report_html}")
    _emit(report, as_json)


# --- train / eval --------------------------------------------------------------------------------
def train_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    data: Annotated[Path, typer.Option("--data", help="Directory written by `tuneloop data prepare`.")],
    out: Out = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in --out.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the pre-flight estimate and measured speed; do not train.")] = False,
    wait_for_lock: Annotated[float, typer.Option(help="Seconds to wait while another trainer still writes --out.", min=0, max=3600)] = 0.0,
    as_json: Json = False,
) -> None:
    """Fine-tune (LoRA, DoRA, QLoRA or full; SFT, DPO or GRPO) on a prepared data directory.

    Runs data-parallel when started by `torchrun` or `accelerate launch`."""
    _exit_with_worker()
    cfg = load_config(config)
    read_manifest(data)
    check_model(cfg.model.name)
    if resume and out is None:
        raise TuneloopError("--resume needs --out: the run directory whose checkpoints to continue from")
    if out is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise TuneloopError("under torchrun / accelerate launch, give --out: every process must write to the same run directory")
    if out is None:
        out = Path("runs") / "dry-run" if dry_run else new_run_dir(Path("runs"), f"{cfg.name}-train")  # a dry run writes nothing
    from tuneloop.train.trainer import train

    _quiet_libraries()
    summary = train(cfg.train, cfg.model, data, out, resume=resume, dry_run=dry_run, wait_for_lock=wait_for_lock, criteria=cfg.objective)
    _emit(summary, as_json)


def _exit_with_worker() -> None:
    """Under a jobs worker (TUNELOOP_WORKER_PID), leave when the worker's process is gone: a server killed
    with -9 must not leave a trainer running that would race the one its restart resumes."""
    pid = os.environ.get("TUNELOOP_WORKER_PID", "")
    if not pid.isdigit():
        return

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                print(f"tuneloop: the jobs worker (process {pid}) is gone; stopping this trainer", file=sys.stderr, flush=True)
                os._exit(75)  # checkpoints are atomic: the resumed run continues from the last complete one
            except PermissionError:
                pass

    threading.Thread(target=watch, name="worker-watch", daemon=True).start()


class _DefaultCommand(typer.core.TyperGroup):
    """A verb group whose first command is the default: `tuneloop eval CONFIG ...` means `eval run`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [next(iter(self.commands)), *args]
        return super().parse_args(ctx, args)


eval_app = typer.Typer(cls=_DefaultCommand, no_args_is_help=True,
                       help="Evaluate against baselines; blind A/B for humans. `tuneloop eval CONFIG ...` is short for `tuneloop eval run CONFIG ...`.")


@eval_app.command("run")
def eval_cmd(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML.")],
    data: Annotated[Path, typer.Option("--data", help="Directory written by `tuneloop data prepare`.")],
    model: Annotated[Optional[str], typer.Option("--model", help="Train run dir, registry NAME[:VERSION], or a model folder.")] = None,
    registry: Annotated[Optional[str], typer.Option("--registry", help="SQLAlchemy URL of the registry.")] = None,
    out: Out = None,
    as_json: Json = False,
) -> None:
    """Fine-tuned vs base, prompt-engineered and RAG baselines on the test split; exit 1 when a gate fails.

    `tuneloop eval CONFIG ...` is short for `tuneloop eval run CONFIG ...`."""
    cfg = load_config(config)
    read_manifest(data)
    check_inputs(cfg.model_copy(update={"data": cfg.data.model_copy(update={"inputs": []})}))
    weights = _resolve_weights(model, registry) if model else None
    from tuneloop.eval.evaluate import evaluate
    from tuneloop.eval.table import metrics_table

    _quiet_libraries()
    out = out or new_run_dir(Path("runs"), f"{cfg.name}-eval")
    results = evaluate(cfg.eval, cfg.model, cfg.task, cfg.objective, data, weights, out)
    console.print(metrics_table(results))
    console.print(f"report -> {EvalDir(out).report_html}")
    _emit(results, as_json)
    if not results["objective_passed"]:
        failed = [f"{g['metric']} {g['value']:.3f} (needs {g['gate']}, missed by {-g['margin']:.3f})" for g in results["gates"] if not g["passed"]]
        console.print(f"[red]objective not met:[/] {'; '.join(failed)}")
        raise typer.Exit(1)


@eval_app.command("ab-export")
def eval_ab_export(
    eval_dir: Annotated[Path, typer.Argument(help="Eval run directory (its samples.jsonl).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Where the A/B files go (default: EVAL_DIR/ab).")] = None,
    a: Annotated[str, typer.Option("--a", help="First system.")] = "finetuned",
    b: Annotated[str, typer.Option("--b", help="Second system.")] = "base",
    seed: int = 0,
    limit: Annotated[Optional[int], typer.Option(help="At most N pairs.")] = None,
    as_json: Json = False,
) -> None:
    """Write blind A/B pairs (hidden, randomised order) as ab.csv and an offline ab.html form for reviewers."""
    from tuneloop.eval.ab import export_ab

    out = out or EvalDir(eval_dir).ab.root
    result = export_ab(EvalDir(eval_dir).samples, out, a, b, seed=seed, limit=limit)
    console.print(f"{result['pairs']} pairs -> {result['csv']} and {result['html']}; keep {result['key']} away from reviewers")
    _emit(result, as_json)


@eval_app.command("ab-import")
def eval_ab_import(
    judgments: Annotated[Path, typer.Argument(help="The filled ab.csv (or the CSV the HTML form downloads).")],
    key: Annotated[Path, typer.Option("--key", help="ab_key.json written by ab-export.")],
    as_json: Json = False,
) -> None:
    """Win/tie/loss of system A against B from reviewers' judgments, with an exact sign test."""
    from tuneloop.eval.ab import import_ab

    r = import_ab(judgments, key)
    p = "n/a" if r["p_value"] is None else f"{r['p_value']:.4f}"
    console.print(f"{r['system_a']} vs {r['system_b']}: {r['wins_a']} wins, {r['ties']} ties, {r['wins_b']} losses "
                  f"({r['unjudged']} unjudged); sign test p = {p}{' (significant)' if r['significant'] else ''}")
    _emit(r, as_json)


def _resolve_weights(ref: str, registry: str | None) -> Path:
    """A train run directory, an adapter or model folder, or a registry NAME[:VERSION]."""
    from tuneloop.models import trained_weights

    path = Path(ref)
    if path.is_dir():
        if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
            return path
        return trained_weights(path)
    train_dir, _ = _resolve_served(ref, registry)
    return trained_weights(train_dir)


def export_cmd(
    run: Annotated[Path, typer.Argument(help="Train run directory (adapter/ or model/ inside).")],
    out: Out = None,
    gguf: Annotated[Optional[str], typer.Option("--gguf", help="Also write model.gguf for llama.cpp/ollama: f16 or f32.")] = None,
    as_json: Json = False,
) -> None:
    """Merge a LoRA/DoRA adapter into its base and write a plain model folder (safetensors), optionally GGUF."""
    from tuneloop.models.export import export_run

    _quiet_libraries()
    if gguf not in (None, "f16", "f32"):
        raise TuneloopError(f"--gguf must be f16 or f32, got '{gguf}'")
    result = export_run(run, out or new_run_dir(Path("runs"), f"{run.name}-export"), gguf)
    console.print(f"merged model -> {result['model']}" + (f", GGUF -> {result['gguf']}" if result["gguf"] else ""))
    _emit(result, as_json)


def _resolve_served(model: str, registry: str | None) -> tuple[Path, str]:
    if Path(model).is_dir():
        return Path(model), Path(model).resolve().parent.name
    from tuneloop.registry.store import Registry

    version = Registry(registry).resolve(model)
    return Path(version["artifact_path"]), model
