"""Train, save and load the router's classifier: logistic regression on MiniLM embeddings of labelled requests.

Training data is every route's `examples` from the router config plus optional (text, route) pairs, e.g.
read from a JSONL file of {"text": ..., "route": ...} lines with `read_examples`. Accuracy is measured
before the final fit on everything: stratified k-fold cross-validation for small sets (a 20% hold-out of a
few dozen requests is too noisy to trust), a stratified 20% hold-out for larger ones.

The output directory holds `classifier.joblib` (the sklearn model and its label list) and `manifest.json`
(accuracy, counts, seed, library versions). joblib files are pickles: load only directories you trust.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tuneloop.artifacts import MANIFEST, jsonl_objects, write_manifest
from tuneloop.errors import TuneloopError

if TYPE_CHECKING:
    from tuneloop.serve.router_config import RouterConfig

MODEL_FILE = "classifier.joblib"
EMBEDDER = "all-MiniLM-L6-v2"
# Below this many examples, cross-validate; at or above it, hold out 20%.
HOLDOUT_FROM = 200
# Inverse regularisation strength: unit-length 384-d embeddings need a weak penalty, or every probability
# stays near 1/k and nothing clears min_confidence.
C = 10.0


@dataclass
class Classifier:
    path: Path
    model: Any  # sklearn LogisticRegression fitted on embeddings, classes_ == labels
    labels: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        """One row per text, one column per label (in `labels` order)."""
        from tuneloop.models.embed import embed

        return self.model.predict_proba(embed(texts))

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
    import joblib

    joblib.dump({"model": model, "labels": [str(c) for c in model.classes_], "embedder": EMBEDDER}, out / MODEL_FILE)
    report = {
        "accuracy": round(accuracy, 4),
        "evaluation": evaluation,
        "n_examples": len(texts),
        "counts": counts,
        "labels": [str(c) for c in model.classes_],
        "embedder": EMBEDDER,
        "examples_sha256": hashlib.sha256(json.dumps(list(zip(texts, labels))).encode()).hexdigest(),
    }
    write_manifest(out, "router-train", config, inputs={}, outputs=[out / MODEL_FILE], seed=seed, started=started, extra=report)
    return report


def load_classifier(directory: Path) -> Classifier:
    directory = Path(directory)
    file = directory / MODEL_FILE
    if not file.is_file():
        raise TuneloopError(f"{directory}: no {MODEL_FILE} here; train the router's classifier first with train_router")
    import joblib

    saved = joblib.load(file)
    if not isinstance(saved, dict) or "model" not in saved or "labels" not in saved:
        raise TuneloopError(f"{file}: not a router classifier written by train_router; retrain it")
    if [str(c) for c in saved["model"].classes_] != saved["labels"]:
        raise TuneloopError(f"{file}: the label list does not match the model's classes; retrain it")
    manifest_path = directory / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    return Classifier(directory, saved["model"], list(saved["labels"]), manifest)


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
