"""Early stopping and best-checkpoint choice on one validation number: stop after `patience` evaluations
without an improvement of at least `min_delta`.

The number is `train.selection`: validation loss (lower is better), the validation reward of GRPO, or a
task metric scored on the validation split's greedy answers (higher is better)."""

from __future__ import annotations

import math

from tuneloop.config import EarlyStopping


class EarlyStop:
    def __init__(self, cfg: EarlyStopping, records: list[dict] = (), key: str = "val_loss", mode: str = "min"):
        self.cfg, self.key = cfg, key
        self.sign = 1.0 if mode == "min" else -1.0  # compare sign * value, always lower-is-better
        self.best = math.inf
        self.bad = 0
        for record in records:  # a resumed run replays its history to the same state
            self.update(record)

    def update(self, record: dict) -> bool:
        """Account for one step's record; True when its selection number is a new best."""
        if self.key not in record:
            return False
        value = self.sign * record[self.key]
        if value < self.best - self.cfg.min_delta:
            self.best, self.bad = value, 0
            return True
        self.bad += 1
        return False

    @property
    def best_value(self) -> float | None:
        return None if math.isinf(self.best) else self.sign * self.best

    @property
    def should_stop(self) -> bool:
        return bool(self.cfg.patience) and self.bad >= self.cfg.patience
