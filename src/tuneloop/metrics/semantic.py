"""Semantic similarity: cosine between the answer's and the reference's MiniLM embeddings."""

from __future__ import annotations

from tuneloop.metrics import Context, sample_metric
from tuneloop.models.embed import embed


@sample_metric
def semantic_similarity(predictions: list[str], references: list[str], ctx: Context) -> list[dict[str, float]]:
    a, b = embed(predictions), embed(references)
    return [{"semantic_similarity": float(value)} for value in (a * b).sum(axis=1)]
