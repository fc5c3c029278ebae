"""What every command module shares: output options, the --json emitter, quieter libraries."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEMO_CONFIG = EXAMPLES / "ticket_triage" / "pipeline.yaml"

Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on the last line of stdout.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: a new one under ./runs).")]
RegistryUrl = Annotated[Optional[str], typer.Option("--registry", help="SQLAlchemy URL (default: sqlite under TUNELOOP_HOME).")]


def _quiet_libraries() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices meant for library authors


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, default=str))
