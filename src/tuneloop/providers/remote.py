"""A model that lives at a provider: what a hosted fine-tune's train folder records in remote.json (written by
the train stage's openai-compatible backend; read by evaluation, the registry and serving).

    {"base_url": ..., "api_key_env": ..., "base_model": ..., "job": "ftjob-...", "status": "succeeded",
     "fine_tuned_model": "ft:...", "files": {"train": "file-...", "val": "file-..."}, "attempts": [...]}
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import TuneloopError
from tuneloop.layout import TrainDir


@dataclass(frozen=True)
class RemoteModel:
    base_url: str
    model: str
    api_key_env: str | None = None


def is_remote(run: Path | None) -> bool:
    return run is not None and TrainDir(Path(run)).remote.is_file()


def remote_model(run: Path) -> RemoteModel:
    """The finished hosted fine-tune a train folder stands for."""
    path = TrainDir(Path(run)).remote
    try:
        state = json.loads(path.read_text())
        base_url, model = state["base_url"], state.get("fine_tuned_model")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise TuneloopError(f"{path}: not a hosted fine-tune's record ({err})") from None
    if not model:
        raise TuneloopError(f"{path}: the hosted job {state.get('job')} has not finished (status {state.get('status')}); "
                            f"run `tuneloop train ... --out {run} --resume` to follow it to the end")
    return RemoteModel(str(base_url), str(model), state.get("api_key_env"))
