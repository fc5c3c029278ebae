"""Loss curves as PNG (matplotlib, headless); GRPO runs get a second panel with the reward."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_losses(records: list[dict], path: Path) -> Path:
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    rewards = any("reward" in r for r in records)  # GRPO: the reward is what the run is about
    fig, axes = plt.subplots(1, 2 if rewards else 1, figsize=(12 if rewards else 7, 4), dpi=110, squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train", linewidth=1.2)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("GRPO loss" if rewards else "loss (nats / answer token)")
    ax.grid(alpha=0.3)
    ax.legend()
    if rewards:
        _plot_rewards(axes[0][1], records)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _plot_rewards(ax, records: list[dict]) -> None:
    for key, style, label in (("reward", "-", "train (sampled)"), ("val_reward", "o-", "validation (greedy)")):
        points = [(r["step"], r[key]) for r in records if key in r]
        if points:
            ax.plot(*zip(*points), style, label=label, linewidth=1.3)
    parts = sorted({k for r in records for k in r if k.startswith("val_reward_")})
    for key in parts:
        ax.plot(*zip(*[(r["step"], r[key]) for r in records if key in r]), ".--", label=key.removeprefix("val_"), linewidth=0.9, alpha=0.8)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("mean reward")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
