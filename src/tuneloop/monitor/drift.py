"""Drift: is production traffic (the current sample) still like the data the served model was trained on
(the reference sample)?

Following Evidently's approach, each check is a plain statistical test with a threshold from
`DriftConfig`, and the verdict is "drift" when any check fires:

- input_length: two-sample Kolmogorov-Smirnov test on word counts (cheap; catches longer or shorter inputs);
- embedding_domain_auc: a logistic-regression "domain classifier" learns to tell reference rows from current
  rows on sentence embeddings; its cross-validated ROC AUC is ~0.5 when the samples are alike and near 1
  when the topic moved, even at equal lengths;
- embedding_mean_distance: cosine distance between the two mean embeddings (a coarse, stable summary);
- label_distribution: population stability index of a label (e.g. a predicted category), with the
  chi-squared p-value for reference, when both samples carry labels.

Too few texts on either side give "too few samples" and no drift: a test on ten requests says nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.stats import chi2_contingency, ks_2samp
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from tuneloop.config import DriftConfig
from tuneloop.errors import TuneloopError

Embed = Callable[[list[str]], np.ndarray]

DOMAIN_SAMPLE_CAP = 2000  # rows per side for the domain classifier: enough for a stable AUC, still seconds
PSI_EPSILON = 1e-4  # stands in for an empty category's share, so ln(c / r) stays finite


def detect_drift(reference: list[str], current: list[str], cfg: DriftConfig = DriftConfig(), *,
                 reference_labels: list[str | None] | None = None, current_labels: list[str | None] | None = None,
                 embed: Embed | None = None, seed: int = 0) -> dict[str, Any]:
    """Compare `current` with `reference`; returns a JSON-serialisable report (see the module docstring)."""
    _check_inputs(reference, current, reference_labels, current_labels)
    report: dict[str, Any] = {"drift": False, "verdict": "too few samples", "min_samples": cfg.min_samples,
                              "n_reference": len(reference), "n_current": len(current), "checks": []}
    if min(len(reference), len(current)) < cfg.min_samples:
        return report

    checks = [length_check(reference, current, cfg)]
    vectors = _embed_both(reference, current, embed)  # once, for both embedding checks
    ref_vectors, cur_vectors = vectors[: len(reference)], vectors[len(reference):]
    checks.append(domain_auc_check(ref_vectors, cur_vectors, cfg, seed))
    checks.append(mean_distance_check(ref_vectors, cur_vectors, cfg))
    ref_labels = [label for label in reference_labels or [] if label is not None]
    cur_labels = [label for label in current_labels or [] if label is not None]
    if ref_labels and cur_labels:
        checks.append(label_check(ref_labels, cur_labels, cfg))

    report["checks"] = checks
    report["drift"] = any(check["drift"] for check in checks)
    report["verdict"] = "drift" if report["drift"] else "no drift"
    return report


def length_check(reference: list[str], current: list[str], cfg: DriftConfig) -> dict[str, Any]:
    """KS test on word counts; drift when p < cfg.ks_p_value."""
    ref_words = np.array([len(text.split()) for text in reference])
    cur_words = np.array([len(text.split()) for text in current])
    result = ks_2samp(ref_words, cur_words)
    p_value = float(result.pvalue)
    return _check("input_length", float(result.statistic), p_value, cfg.ks_p_value, p_value < cfg.ks_p_value,
                  f"KS D={result.statistic:.3f} on word counts (median {np.median(ref_words):g} reference, "
                  f"{np.median(cur_words):g} current), p={p_value:.2g}, drift below {cfg.ks_p_value:g}")


def domain_auc_check(ref_vectors: np.ndarray, cur_vectors: np.ndarray, cfg: DriftConfig, seed: int) -> dict[str, Any]:
    """Cross-validated ROC AUC of a classifier telling current rows from reference rows; drift when >= cfg.domain_auc."""
    rng = np.random.default_rng(seed)
    n = min(len(ref_vectors), len(cur_vectors), DOMAIN_SAMPLE_CAP)  # balanced, so AUC 0.5 means "alike"
    x = np.vstack([ref_vectors[rng.choice(len(ref_vectors), n, replace=False)],
                   cur_vectors[rng.choice(len(cur_vectors), n, replace=False)]])
    y = np.r_[np.zeros(n, dtype=int), np.ones(n, dtype=int)]
    folds = StratifiedKFold(n_splits=min(5, n), shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000), x, y, cv=folds, method="predict_proba")[:, 1]
    auc = float(roc_auc_score(y, scores))
    return _check("embedding_domain_auc", auc, None, cfg.domain_auc, auc >= cfg.domain_auc,
                  f"a classifier tells current from reference with ROC AUC {auc:.3f} "
                  f"({min(5, n)}-fold CV, {n} texts per side; 0.5 = indistinguishable), drift at {cfg.domain_auc:g}")


def mean_distance_check(ref_vectors: np.ndarray, cur_vectors: np.ndarray, cfg: DriftConfig) -> dict[str, Any]:
    """Cosine distance (1 - cos) between the mean embeddings; drift when >= cfg.mean_distance."""
    ref_mean, cur_mean = ref_vectors.mean(axis=0), cur_vectors.mean(axis=0)
    norms = float(np.linalg.norm(ref_mean) * np.linalg.norm(cur_mean))
    distance = 1.0 - float(ref_mean @ cur_mean) / norms if norms > 0 else 1.0
    return _check("embedding_mean_distance", distance, None, cfg.mean_distance, distance >= cfg.mean_distance,
                  f"cosine distance {distance:.4f} between the mean embeddings, drift at {cfg.mean_distance:g}")


def label_check(reference: list[str], current: list[str], cfg: DriftConfig) -> dict[str, Any]:
    """PSI over label categories (the statistic) with the chi-squared p-value; drift when PSI >= cfg.label_psi."""
    ref_counts, cur_counts = Counter(reference), Counter(current)
    categories = sorted(ref_counts.keys() | cur_counts.keys())
    table = np.array([[ref_counts[c] for c in categories], [cur_counts[c] for c in categories]])
    p_value = float(chi2_contingency(table).pvalue) if len(categories) > 1 else 1.0
    ref_share = np.maximum(table[0] / table[0].sum(), PSI_EPSILON)
    cur_share = np.maximum(table[1] / table[1].sum(), PSI_EPSILON)
    psi = float(np.sum((cur_share - ref_share) * np.log(cur_share / ref_share)))
    moved = max(categories, key=lambda c: abs(cur_counts[c] / len(current) - ref_counts[c] / len(reference)))
    return _check("label_distribution", psi, p_value, cfg.label_psi, psi >= cfg.label_psi,
                  f"PSI {psi:.3f} over {len(categories)} labels (chi-squared p={p_value:.2g}); largest move: "
                  f"{moved!r} {ref_counts[moved] / len(reference):.0%} -> {cur_counts[moved] / len(current):.0%}; "
                  f"drift at {cfg.label_psi:g}")


def _embed_both(reference: list[str], current: list[str], embed: Embed | None) -> np.ndarray:
    if embed is None:
        from tuneloop.models.embed import embed  # loads sentence-transformers only when needed
    vectors = np.asarray(embed(list(reference) + list(current)), dtype=np.float64)
    expected = len(reference) + len(current)
    if vectors.ndim != 2 or len(vectors) != expected:
        raise TuneloopError(f"the embedding function returned shape {vectors.shape} for {expected} texts; "
                            "it must return one row per text (a 2-D array)")
    if not np.isfinite(vectors).all():
        raise TuneloopError("the embedding function returned NaN or infinite values; check the embedding model")
    return vectors


def _check_inputs(reference: list[str], current: list[str], reference_labels: list | None,
                  current_labels: list | None) -> None:
    for side, texts in (("reference", reference), ("current", current)):
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise TuneloopError(f"drift: the {side} sample must be a list of strings (one text per request)")
    for side, texts, labels in (("reference", reference, reference_labels), ("current", current, current_labels)):
        if labels is not None and len(labels) != len(texts):
            raise TuneloopError(f"drift: {len(labels)} {side} labels for {len(texts)} {side} texts; "
                                "give one label (or None) per text")


def _check(name: str, statistic: float, p_value: float | None, threshold: float, drift: bool,
           detail: str) -> dict[str, Any]:
    return {"name": name, "statistic": float(statistic), "p_value": p_value, "threshold": float(threshold),
            "drift": bool(drift), "detail": detail}
