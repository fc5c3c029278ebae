"""Bootstrap confidence intervals and paired differences between systems on the same test examples.

Every system answered the same examples, so comparisons are paired: each resample draws one set of
example indices and scores every system on it; the interval of "fine-tuned minus baseline" comes from
the differences within resamples, which is much tighter (and more honest) than comparing two
independent intervals. Sample metrics are means of per-example values (resampled cheaply with
numpy); corpus metrics (F1, BLEU, chrF) are recomputed on each of the first `corpus_resamples` draws.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def paired_bootstrap(
    per_sample: dict[str, list[dict[str, float]]],
    corpus: Callable[[str, np.ndarray], dict[str, float]],
    reference: str | None,
    resamples: int = 1000,
    corpus_resamples: int = 200,
    seed: int = 0,
) -> tuple[dict, dict]:
    """Returns (intervals[system][metric] = [low, high], differences[baseline][metric] = {diff, low, high})
    where differences are `reference` minus each other system. `corpus(system, indices)` scores a resample."""
    systems = list(per_sample)
    n = len(next(iter(per_sample.values())))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(resamples, n))
    replicas: dict[str, dict[str, np.ndarray]] = {s: {} for s in systems}
    for system in systems:
        names = per_sample[system][0].keys() if n else []
        for name in names:
            values = np.array([row[name] for row in per_sample[system]], dtype=float)
            replicas[system][name] = values[draws].mean(axis=1)
        corpus_runs = [corpus(system, draws[i]) for i in range(min(corpus_resamples, resamples))]
        # A resample can miss a rare class entirely; its per-class score is then undefined (nan), not 0.
        for name in {name for run in corpus_runs for name in run}:
            replicas[system][name] = np.array([run.get(name, np.nan) for run in corpus_runs])

    intervals = {s: {m: _interval(v) for m, v in replicas[s].items()} for s in systems}
    differences = {}
    if reference in replicas:
        for other in systems:
            if other == reference:
                continue
            shared = replicas[reference].keys() & replicas[other].keys()
            differences[other] = {m: _interval(replicas[reference][m] - replicas[other][m]) for m in sorted(shared)}
    return intervals, differences


def _interval(values: np.ndarray) -> list[float]:
    if np.isnan(values).all():
        return [float("nan"), float("nan")]
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return [float(low), float(high)]
