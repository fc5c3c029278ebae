"""Metric bars per system with the objective's thresholds, as PNG."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tuneloop.config import ObjectiveConfig  # noqa: E402


def plot_metrics(results: dict[str, dict[str, float]], objective: ObjectiveConfig, path: Path) -> Path:
    systems = list(results)
    metrics = list(next(iter(results.values())))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(metrics)), 4), dpi=110)
    for k, system in enumerate(systems):
        xs = [i + k * width for i in range(len(metrics))]
        ax.bar(xs, [results[system][m] for m in metrics], width, label=system)
    for i, metric in enumerate(metrics):
        if metric in objective.gates:
            x0 = i - width / 2
            ax.hlines(objective.gates[metric].value, x0, x0 + 0.8, colors="black", linestyles="dashed", linewidth=1)
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(metrics))], metrics, rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score (dashed: objective gate)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
