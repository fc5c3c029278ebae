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
    inputs: Annotated[list[Path], typer.Argument(help="Data files: JSONL, JSON, CSV, Parquet or a Hugging Face datasets folder (save_to_disk); chat, prompt/completion, alpaca, preference or ShareGPT rows.")],
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    config: Annotated[Optional[Path], typer.Option("--config", help="Pipeline YAML (data, task and model sections).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Model whose tokenizer measures lengths (default: the config's).")] = None,
    synthetic: Annotated[Optional[list[Path]], typer.Option("--synthetic", help="Rows from `tuneloop data synth` (repeatable; with data.synthetic): train split only, decontaminated.")] = None,
    field_map: Annotated[Optional[list[str]], typer.Option("--field-map", help="PART=COLUMN for odd column names, e.g. prompt=question (repeatable or comma separated; overrides data.fields).")] = None,
    as_json: Json = False,
) -> None:
    from tuneloop.config import ModelConfig
    from tuneloop.data.readers import is_dataset_folder

    cfg = load_config(config) if config else PipelineConfig()
    if field_map:
        cfg.data.fields = _field_names(cfg.data.fields, field_map)
    if synthetic:
        cfg.data.synthetic = [*cfg.data.synthetic, *synthetic]
    model_cfg = ModelConfig(name=model) if model else (cfg.model if config else None)
    for path in [*inputs, *cfg.data.synthetic]:  # before the heavy imports: a typo fails in a second
        if not path.is_file() and not is_dataset_folder(path):
            if path.is_dir():
                raise TuneloopError(f"{path}: folder is not a Hugging Face datasets folder (no state.json or dataset_dict.json); give the data files in it")
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
    if "synthetic" in report:
        made = report["synthetic"]
        console.print(f"synthetic: {made['rows_in']} in, {made['kept']} kept (train), {made['rejected']} rejected {made['rejected_by_rule']}")
    _emit(report, as_json)


def _field_names(fields, pairs: list[str]):
    """data.fields with --field-map's PART=COLUMN pairs on top; a malformed pair is a usage error."""
    valid = list(type(fields).model_fields)
    mapping = {}
    for pair in (item.strip() for value in pairs for item in value.split(",") if item.strip()):
        part, sep, column = (piece.strip() for piece in pair.partition("="))
        if not sep or not column or part not in valid:
            problem = f"unknown part {part!r}" if sep and column else f"{pair!r} is not PART=COLUMN"
            raise typer.BadParameter(f"{problem}; PART is one of {', '.join(valid)}", param_hint="--field-map")
        mapping[part] = column
    return fields.model_copy(update=mapping)


@data_app.command("synth")
def data_synth(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML (its data.synth section, task and data sections).")],
    out: Annotated[Path, typer.Option("--out", help="JSONL file of synthetic rows; a partial one is continued.")],
    rows: Annotated[Optional[int], typer.Option("--rows", help="Rows to request (data.synth.rows).", min=1, max=1_000_000)] = None,
    teacher_url: Annotated[Optional[str], typer.Option("--teacher-url", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.")] = None,
    teacher_model: Annotated[Optional[str], typer.Option("--teacher-model", help="The teacher's model name on that endpoint.")] = None,
    api_key_env: Annotated[Optional[str], typer.Option("--api-key-env", help="Environment variable holding the endpoint's key.")] = None,
    max_requests: Annotated[Optional[int], typer.Option("--max-requests", help="Budget: requests in all.", min=1)] = None,
    judge_threshold: Annotated[Optional[float], typer.Option("--judge-threshold", help="Drop rows the judge scores under this (0-1).", min=0, max=1)] = None,
    as_json: Json = False,
) -> None:
    """Ask a teacher model for new training rows from seed rows: paraphrases, new inputs per label, answers for unlabeled inputs."""
    given = {"rows": rows, "teacher.base_url": teacher_url, "teacher.model": teacher_model, "teacher.api_key_env": api_key_env,
             "max_requests": max_requests, "judge_threshold": judge_threshold}
    cfg = load_config(config, {f"data.synth.{k}": v for k, v in given.items() if v is not None})
    from tuneloop.data.synth import synthesise

    _quiet_libraries()
    report = synthesise(cfg.data, cfg.task, out)
    counts, requests = report["rows"], report["requests"]
    console.print(f"{counts['written']} rows in {out} ({counts['asked']} asked, {counts['returned']} returned, "
                  f"{counts['judged_out']} judged out); requests {requests['by_status']}, "
                  f"{requests['failed_this_run']} failed and {requests['not_sent_budget']} not sent (budget): rerun to continue")
    console.print(f"next: tuneloop data prepare ... --config {config} --synthetic {out} --out DIR")
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


GGUF_TYPES = ("f32", "f16", "q8_0", "q4_k_m", "q5_k_m")  # models.gguf_export.ALL_OUTTYPES, without importing gguf yet


def export_cmd(
    run: Annotated[Path, typer.Argument(help="Train run directory (adapter/ or model/ inside).")],
    out: Out = None,
    gguf: Annotated[Optional[str], typer.Option("--gguf", help="Also write model.gguf for llama.cpp/ollama: f32, f16, q8_0, "
                                                "or q4_k_m / q5_k_m (made by llama.cpp's llama-quantize, when installed).")] = None,
    ollama: Annotated[bool, typer.Option("--ollama", help="Also write an Ollama Modelfile beside the GGUF (chat template, stop "
                                         "tokens, defaults, the task's system prompt): `ollama create NAME -f Modelfile`.")] = False,
    as_json: Json = False,
) -> None:
    """Merge a LoRA/DoRA adapter into its base and write a plain model folder (safetensors), optionally GGUF."""
    if gguf is not None and gguf.lower() not in GGUF_TYPES:
        raise TuneloopError(f"--gguf must be one of {', '.join(GGUF_TYPES)}, got '{gguf}'")
    from tuneloop.models.export import export_run

    _quiet_libraries()
    result = export_run(run, out or new_run_dir(Path("runs"), f"{run.name}-export"), gguf and gguf.lower(), ollama)
    console.print(f"merged model -> {result['model']}" + (f", GGUF -> {result['gguf']}" if result["gguf"] else "")
                  + (f", Modelfile -> {result['modelfile']}" if result["modelfile"] else ""))
    _emit(result, as_json)


def _resolve_served(model: str, registry: str | None) -> tuple[Path, str]:
    if Path(model).is_dir():
        return Path(model), Path(model).resolve().parent.name
    from tuneloop.registry.store import Registry

    version = Registry(registry).resolve(model)
    return Path(version["artifact_path"]), model
