"""Metrics shared by the evaluation stage (scores on the test split) and the monitor (reference-free scores
on served traffic), so a number means the same in both: a registry each module of this package adds to.

Two kinds, by how a system's score and its bootstrap interval are computed:
- sample metrics, `f(predictions, references, ctx) -> [{name: value}, ...]` (one dict per sample):
  the score is the mean, and resampling the per-sample values gives the interval;
- corpus metrics, `f(predictions, references, ctx) -> {name: value}`: computed on the whole set
  (macro F1, corpus BLEU, chrF), recomputed on every bootstrap resample.
Every module in this folder is imported on first use, so its decorators register its metrics.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from tuneloop.config import TaskConfig

SAMPLE: dict[str, Callable] = {}
CORPUS: dict[str, Callable] = {}


@dataclass
class Context:
    task: TaskConfig = field(default_factory=TaskConfig)
    tools: list[list[dict] | None] | None = None  # each sample's declared tools, when the task calls tools


def sample_metric(fn: Callable) -> Callable:
    SAMPLE[fn.__name__] = fn
    return fn


def corpus_metric(fn: Callable) -> Callable:
    CORPUS[fn.__name__] = fn
    return fn


def _load_all() -> None:
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def score_samples(predictions: list[str], references: list[str], ctx: Context) -> list[dict[str, float]]:
    """Every sample metric for every sample: one merged dict per sample."""
    _load_all()
    merged: list[dict[str, float]] = [{} for _ in predictions]
    for fn in SAMPLE.values():
        for into, values in zip(merged, fn(predictions, references, ctx)):
            into.update(values)
    return merged


def score_corpus(predictions: list[str], references: list[str], ctx: Context) -> dict[str, float]:
    _load_all()
    scores: dict[str, float] = {}
    for fn in CORPUS.values():
        scores.update(fn(predictions, references, ctx))
    return scores


def mean_scores(per_sample: list[dict[str, float]]) -> dict[str, float]:
    names = per_sample[0].keys() if per_sample else []
    return {name: sum(s[name] for s in per_sample) / len(per_sample) for name in names}
