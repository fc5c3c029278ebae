"""Early stopping on validation loss: stop after `patience` evaluations without improvement."""

from __future__ import annotations

import math

from tuneloop.config import EarlyStopping


class EarlyStop:
    def __init__(self, cfg: EarlyStopping, records: list[dict] = ()):
        self.cfg = cfg
        self.best = math.inf
        self.bad = 0
        for record in records:  # a resumed run replays its history to the same state
            self.update(record)

    def update(self, record: dict) -> bool:
        """Account for one step's record; True when its validation loss is a new best."""
        if "val_loss" not in record:
            return False
        if record["val_loss"] < self.best - self.cfg.min_delta:
            self.best, self.bad = record["val_loss"], 0
            return True
        self.bad += 1
        return False

    @property
    def should_stop(self) -> bool:
        return bool(self.cfg.patience) and self.bad >= self.cfg.patience
