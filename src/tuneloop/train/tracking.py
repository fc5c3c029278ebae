"""Training metrics as they happen: the run's metrics file (one JSON line per optimizer step) and TensorBoard.

A resumed run rewrites the metrics file to the checkpoint's history, so steps that were lost with the
killed process never appear twice; TensorBoard is told to purge them the same way.
"""

from __future__ import annotations

import json

from tuneloop.layout import TrainDir


class MetricsLog:
    def __init__(self, run: TrainDir, history: list[dict], tensorboard: bool):
        self.path = run.metrics
        self.path.write_text("".join(json.dumps(r) + "\n" for r in history))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            resumed_at = history[-1]["step"] + 1 if history else None
            self.writer = SummaryWriter(str(run.tensorboard), purge_step=resumed_at)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    group = "val" if key.startswith("val_") else "train"
                    self.writer.add_scalar(f"{group}/{key.removeprefix('val_').removeprefix('train_')}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
