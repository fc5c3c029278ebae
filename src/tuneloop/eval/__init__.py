"""Evaluation stage: compare systems (fine-tuned, base, ...) on the held-out test split (`evaluate.evaluate`)."""
