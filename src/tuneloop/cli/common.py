"""What every command module shares: output options, the --json emitter, quieter libraries."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from tuneloop.layout import ProjectDir

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEMO = EXAMPLES / "ticket_triage"
DEMO_CONFIG = ProjectDir(DEMO).config
DEMO_DATA = DEMO / "tickets.jsonl"

Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object on the last line of stdout.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output directory (default: a new one under ./runs).")]
RegistryUrl = Annotated[Optional[str], typer.Option("--registry", help="SQLAlchemy URL (default: sqlite under TUNELOOP_HOME).")]


def _quiet_libraries() -> None:
    import os

    os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' own bars (lm-eval, weight loading): ours say it in one style
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices meant for library authors


def _emit(result: dict, as_json: bool) -> None:
    if as_json:
        from tuneloop import __version__

        print(json.dumps({**result, "tuneloop_version": __version__} if isinstance(result, dict) else result, default=str))


def check_inputs(cfg, model: bool = True) -> None:
    """The config's files and model, checked before any heavy import: a typo fails in a second, not a minute."""
    from tuneloop.errors import TuneloopError
    from tuneloop.models.resolve import check_model

    named = [("data.inputs", p) for p in cfg.data.inputs] + [
        (key, path) for key, path in (("data.frozen_test", cfg.data.frozen_test), ("eval.edge_cases", cfg.eval.edge_cases),
                                      ("eval.bias.inputs", cfg.eval.bias and cfg.eval.bias.inputs),
                                      ("eval.bias.terms", cfg.eval.bias and cfg.eval.bias.terms))
        if path is not None]
    from tuneloop.data.readers import is_dataset_folder

    for key, path in named:
        if not Path(path).is_file() and not (key == "data.inputs" and is_dataset_folder(path)):
            raise TuneloopError(f"{path}: file not found ({key}){suggest_path(Path(path))}")
    for key, folder in (("data.rag.index", cfg.data.rag.index if cfg.data.rag else None), ("eval.rag_index", cfg.eval.rag_index)):
        if folder is not None and not Path(folder).is_dir():
            raise TuneloopError(f"{folder}: knowledge base folder not found ({key}); build it with `tuneloop rag index`{suggest_path(Path(folder))}")
    if model:
        check_model(cfg.model.name)


def suggest_path(path: Path) -> str:
    import difflib

    siblings = [p.name for p in path.parent.iterdir()] if path.parent.is_dir() else []
    close = difflib.get_close_matches(path.name, siblings, n=1, cutoff=0.6)
    return f"; did you mean {path.parent / close[0]}?" if close else ""
