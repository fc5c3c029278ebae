"""What a fine-tuning job needs from the other stages, declared here and supplied by the process that
serves the jobs API (tuneloop/server.py wires in the data stage and the registry).

The jobs stage never imports another stage: it checks uploads, prepares data and registers the finished
model through this interface, and trains in a subprocess (`tuneloop train`), handing off through the
job's run folder on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from tuneloop.config import DataConfig, ModelConfig


class Stages(Protocol):
    def check_file(self, path: Path) -> str | None:
        """None when every row of an uploaded file is a valid training example, else a report naming each bad line."""

    def prepare(self, inputs: list[Path], out: Path, data: DataConfig, model: ModelConfig) -> None:
        """Prepare `inputs` into the data stage's folder `out` (train/val/test splits)."""

    def register(self, name: str, train_dir: Path, note: str) -> dict[str, Any]:
        """Register a finished train run as the next version of `name`; returns the version (with its `ref`)."""
