"""A GRPO round after SFT, for `tuneloop run` and `tuneloop loop` (the pipeline's `rl:` section).

The SFT run is exported (its LoRA merged into the base), and that merged model is the round's base: the
policy GRPO starts from and the reference its KL term pulls towards, so the round can only sharpen what
SFT taught, at a measured distance. Returns what the next stages need: the model the round's adapter
applies to, and the round's train folder.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.config import ModelConfig, PipelineConfig
from tuneloop.layout import PipelineDir
from tuneloop.models.export import export_run
from tuneloop.train.trainer import train
from tuneloop.ui import console


def grpo_round(cfg: PipelineConfig, sft_dir: Path, data_dir: Path, folders: PipelineDir, resume: bool = False) -> tuple[ModelConfig, Path]:
    merged = folders.sft_export.model
    if not (merged / "config.json").is_file():
        export_run(sft_dir, folders.sft_export.root)
    base = ModelConfig(name=str(merged.resolve()))
    rl_dir = folders.train_rl.root
    summary = train(cfg.rl.train_config(cfg.train), base, data_dir, rl_dir, resume=resume, criteria=cfg.objective)
    console.print(f"GRPO: reward {summary.get('reward', float('nan')):.3f} at the last step, validation reward "
                  f"{summary.get('best_selection')} (best) -> {folders.train_rl.loss_plot}")
    return base, rl_dir
