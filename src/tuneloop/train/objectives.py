"""Training objectives: what the loop in trainer.py asks of each one (the `Objective` protocol), and the table
that names them for `train.objective`.

An objective owns its data (encoded from the data stage's split files), how examples batch and collate,
the loss of one optimizer step (forward and backward over that step's micro-batches, gradients left in
place) and validation. SFT (sft.py), DPO (dpo.py) and GRPO (grpo.py) implement it; a new objective is one file with a
class like theirs, an entry in OBJECTIVES and its name in config.TrainConfig.objective (a test checks
that the two lists agree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from tuneloop.config import ObjectiveConfig, TrainConfig
from tuneloop.train.dpo import Dpo
from tuneloop.train.grpo import Grpo
from tuneloop.train.sft import Sft


class Objective(Protocol):
    rows_per_example: int  # sequences per example in a forward pass (a preference pair is two)
    steps_per_group: int  # optimizer steps one drawn group of micro-batches serves (GRPO's iterations; else 1)
    train_set: Sequence[Any]
    val_set: Sequence[Any]
    truncated: int  # training examples cut to max_seq_len

    def attach(self, model) -> None:
        """Called once with the model to train, before the first step (DPO keeps its reference here)."""

    def stats(self) -> dict[str, int]:
        """examples, longest, longest_target and tokens of the training set (for the pre-flight estimate)."""

    def batches(self, epoch: int) -> list[list[Any]]:
        """The epoch's micro-batches of examples, in a seeded order."""

    def collate(self, examples: list[Any]) -> dict[str, Any]:
        """One micro-batch as tensors."""

    def step(self, model, group: list[dict[str, Any]], world, where) -> dict[str, float]:
        """Forward and backward over one optimizer step's micro-batches; `train_loss` and `tokens` at least."""

    def validate(self, model, world, where) -> dict[str, float]:
        """Validation metrics (`val_loss` at least), summed over ranks."""


# Each is called with (tokenizer, data folder, train config, the objective's success criteria: GRPO's reward).
OBJECTIVES: dict[str, Callable[[Any, Path, TrainConfig, ObjectiveConfig | None], Objective]] = {"sft": Sft, "dpo": Dpo, "grpo": Grpo}


def build_objective(tokenizer, data_dir: Path, cfg: TrainConfig, criteria: ObjectiveConfig | None = None) -> Objective:
    return OBJECTIVES[cfg.objective](tokenizer, data_dir, cfg, criteria)
