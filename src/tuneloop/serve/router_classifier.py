"""Train, save and load the router's classifier: logistic regression on MiniLM embeddings of labelled requests.

Training data is every route's `examples` from the router config plus optional (text, route) pairs, e.g.
read from a JSONL file of {"text": ..., "route": ...} lines with `read_examples`. Accuracy is measured
before the final fit on everything: stratified k-fold cross-validation for small sets (a 20% hold-out of a
few dozen requests is too noisy to trust), a stratified 20% hold-out for larger ones.

The output directory holds `classifier.safetensors` (the model's coefficients), `classifier.json` (its
labels) and `manifest.json` (accuracy, counts, seed, library versions): arrays and JSON, never a pickle,
so a router folder from anywhere can be loaded safely.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tuneloop.artifacts import MANIFEST, jsonl_objects, write_manifest
from tuneloop.errors import TuneloopError
from tuneloop.layout import ClassifierDir

if TYPE_CHECKING:
    from tuneloop.serve.router_config import RouterConfig

EMBEDDER = "all-MiniLM-L6-v2"
# Below this many examples, cross-validate; at or above it, hold out 20%.
HOLDOUT_FROM = 200
# Inverse regularisation strength: unit-length 384-d embeddings need a weak penalty, or every probability
# stays near 1/k and nothing clears min_confidence.
C = 10.0


@dataclass
class Classifier:
    """A logistic regression on embeddings, as plain arrays: `coef` (one row per label, or one row for two
    labels) and `intercept`. Probabilities are computed as scikit-learn's predict_proba computes them."""

    path: Path
    coef: np.ndarray
    intercept: np.ndarray
    labels: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """One row per text, one column per label (in `labels` order)."""
        from tuneloop.models.embed import embed

        return self.probabilities(embed(texts))

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        scores = np.asarray(vectors, dtype=np.float64) @ self.coef.T + self.intercept
        if scores.shape[1] == 1:  # two labels: one decision function, logistic
            positive = 1 / (1 + np.exp(-scores[:, 0]))
            return np.stack([1 - positive, positive], axis=1)
        scores -= scores.max(axis=1, keepdims=True)  # multinomial: softmax
        exp = np.exp(scores)
        return exp / exp.sum(axis=1, keepdims=True)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


def read_examples(path: Path) -> list[tuple[str, str]]:
    """(text, route) pairs from a JSONL file of {"text": ..., "route": ...} objects."""
    path = Path(path)
    if not path.is_file():
        raise TuneloopError(f"{path}: examples file not found")
    pairs = []
    for number, row in jsonl_objects(path, 'an object like {"text": ..., "route": ...}'):
        for key in ("text", "route"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise TuneloopError(f"{path}:{number}: '{key}' must be a non-empty string, got {row.get(key)!r}")
        pairs.append((row["text"], row["route"]))
    if not pairs:
        raise TuneloopError(f"{path}: no examples in the file")
    return pairs


def train_router(config: RouterConfig, examples: list[tuple[str, str]] | None, out: Path, seed: int = 0) -> dict:
    """Fit the classifier, measure its accuracy, save it into `out`; returns the report written to the manifest."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split

    from tuneloop.models.embed import embed

    started = time.time()
    out = Path(out)
    texts, labels = _training_set(config, examples or [])
    counts = {label: labels.count(label) for label in sorted(set(labels))}
    vectors = embed(texts)
    y = np.array(labels)

    if len(texts) >= HOLDOUT_FROM:
        x_train, x_test, y_train, y_test = train_test_split(vectors, y, test_size=0.2, stratify=y, random_state=seed)
        accuracy = float(_new_model(seed).fit(x_train, y_train).score(x_test, y_test))
        evaluation = f"stratified 20% hold-out ({len(y_test)} requests)"
    else:
        folds = min(5, min(counts.values()))
        splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        accuracy = float(cross_val_score(_new_model(seed), vectors, y, cv=splits).mean())
        evaluation = f"stratified {folds}-fold cross-validation"

    model = _new_model(seed).fit(vectors, y)
    out.mkdir(parents=True, exist_ok=True)
    folder = ClassifierDir(out)
    save_file({"coef": torch.from_numpy(np.ascontiguousarray(model.coef_, dtype=np.float64)),
               "intercept": torch.from_numpy(np.ascontiguousarray(model.intercept_, dtype=np.float64))},
              str(folder.weights))
    folder.labels.write_text(json.dumps({"labels": [str(c) for c in model.classes_], "embedder": EMBEDDER}))
    report = {
        "accuracy": round(accuracy, 4),
        "evaluation": evaluation,
        "n_examples": len(texts),
        "counts": counts,
        "labels": [str(c) for c in model.classes_],
        "embedder": EMBEDDER,
        "examples_sha256": hashlib.sha256(json.dumps(list(zip(texts, labels))).encode()).hexdigest(),
    }
    write_manifest(out, "router-train", config, inputs={}, outputs=[folder.weights, folder.labels], seed=seed, started=started, extra=report)
    return report


def load_classifier(directory: Path) -> Classifier:
    """The classifier `train_router` saved: arrays and JSON only (an old pickled classifier is refused)."""
    directory = Path(directory)
    folder = ClassifierDir(directory)
    weights, names = folder.weights, folder.labels
    if not weights.is_file() or not names.is_file():
        old = f" (its {folder.legacy.name} is from an older tuneloop: a pickle, which is never loaded)" if folder.legacy.is_file() else ""
        raise TuneloopError(f"{directory}: no {weights.name} and {names.name} here{old}; train the router's classifier "
                            f"with `tuneloop route train`")
    try:
        arrays = load_file(str(weights))
        saved = json.loads(names.read_text())
        coef, intercept, labels = arrays["coef"].numpy(), arrays["intercept"].numpy(), [str(label) for label in saved["labels"]]
    except Exception as err:  # whatever a damaged or foreign file makes safetensors or json raise
        raise TuneloopError(f"{directory}: not a router classifier written by `tuneloop route train` ({err}); retrain it") from None
    rows = 1 if len(labels) == 2 else len(labels)
    if coef.ndim != 2 or coef.shape[0] != rows or intercept.shape != (rows,) or len(set(labels)) != len(labels) or len(labels) < 2:
        raise TuneloopError(f"{directory}: the classifier's arrays {tuple(coef.shape)} do not fit its {len(labels)} labels; retrain it")
    manifest_path = directory / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return Classifier(directory, coef, intercept, labels, manifest)


def _training_set(config: RouterConfig, extra: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """Config examples plus `extra`, exact duplicates dropped; conflicting or unknown labels are errors."""
    names = [route.name for route in config.routes]
    pairs = [(text, route.name) for route in config.routes for text in route.examples]
    for number, (text, route) in enumerate(extra, start=1):
        if route not in names:
            raise TuneloopError(f"training example {number} ({text[:60]!r}): route '{route}' is not in router "
                                f"'{config.name}' (routes: {', '.join(names)})")
        pairs.append((text, route))
    # Repeats (ignoring case and spacing) would land on both sides of a split and inflate accuracy.
    unique: dict[str, tuple[str, str]] = {}
    for text, route in pairs:
        key = " ".join(text.split()).lower()
        first = unique.setdefault(key, (text, route))
        if first[1] != route:
            raise TuneloopError(f"training example {text[:60]!r} is labelled both '{first[1]}' and '{route}'; keep one")
    counts: dict[str, int] = {}
    for _, route in unique.values():
        counts[route] = counts.get(route, 0) + 1
    if len(counts) < 2:
        raise TuneloopError(f"router '{config.name}': the classifier needs examples for at least 2 routes, got {sorted(counts) or 'none'}")
    few = [f"{route} ({n})" for route, n in counts.items() if n < 2]
    if few:
        raise TuneloopError(f"router '{config.name}': every trained route needs at least 2 examples; add more for {', '.join(few)}")
    return [text for text, _ in unique.values()], [route for _, route in unique.values()]


def _new_model(seed: int):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000, class_weight="balanced", random_state=seed)
