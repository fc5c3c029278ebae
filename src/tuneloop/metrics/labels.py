"""Classification metrics on label fields of JSON answers (scikit-learn): accuracy, macro and per-class
precision / recall / F1. An answer that is not JSON, or lacks the field, predicts "(invalid)", which is
never a reference class: it counts against recall and accuracy, as it should.
"""

from __future__ import annotations

from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tuneloop.metrics import Context, corpus_metric
from tuneloop.metrics.structure import parse_object

INVALID = "(invalid)"


def field_labels(texts: list[str], name: str) -> list[str]:
    labels = []
    for text in texts:
        value = parse_object(text)
        labels.append(INVALID if value is None or value.get(name) is None else str(value.get(name)))
    return labels


@corpus_metric
def classification(predictions: list[str], references: list[str], ctx: Context) -> dict[str, float]:
    scores: dict[str, float] = {}
    for name in ctx.task.label_fields:
        truth, guess = field_labels(references, name), field_labels(predictions, name)
        classes = sorted(set(truth) - {INVALID})
        if not classes:
            continue
        precision, recall, f1, _ = precision_recall_fscore_support(truth, guess, labels=classes, average="macro", zero_division=0)
        scores[f"{name}.accuracy"] = float(accuracy_score(truth, guess))
        scores[f"{name}.precision_macro"], scores[f"{name}.recall_macro"], scores[f"{name}.f1_macro"] = map(float, (precision, recall, f1))
        per_class = precision_recall_fscore_support(truth, guess, labels=classes, average=None, zero_division=0)[2]
        scores.update({f"{name}.f1.{label}": float(value) for label, value in zip(classes, per_class)})
    return scores


def confusion_tables(outputs: dict[str, list[str]], references: list[str], name: str) -> dict:
    """One label list for all systems (reference classes, predicted ones, then '(invalid)' if any) and
    a count matrix per system: rows = reference label, columns = predicted label."""
    truth = field_labels(references, name)
    guesses = {system: field_labels(answers, name) for system, answers in outputs.items()}
    predicted = set().union(*guesses.values())
    labels = sorted((set(truth) | predicted) - {INVALID}) + ([INVALID] if INVALID in predicted else [])
    return {"labels": labels, "confusion": {s: confusion_matrix(truth, g, labels=labels).tolist() for s, g in guesses.items()}}
