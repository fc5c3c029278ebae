"""Eval stage (`tuneloop eval`): the fine-tuned model against the base, prompt-engineered and RAG baselines
on the held-out test split, with intervals and the objective's gates (`evaluate.evaluate`).

It reads a data folder and a train run's weights, scores with the shared metrics (tuneloop/metrics),
and writes an eval folder; it imports no other stage.
"""
