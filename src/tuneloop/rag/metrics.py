"""Retrieval and grounding metrics for RAG: recall@k and MRR over labelled queries, and groundedness.

Groundedness is a cheap, reference-free check that an answer says what the retrieved context says:
the share of the answer's sentences whose best MiniLM cosine similarity to any context sentence (or
whole context passage) reaches `threshold`. It flags answers that wander off the context; it cannot
tell a faithful paraphrase of a wrong passage from a right one, so read it beside answer quality.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tuneloop.errors import TuneloopError
from tuneloop.rag.chunking import split_sentences

Embed = Callable[[list[str]], np.ndarray]


def recall_at_k(retrieved_ids: list[list[str]], relevant: list[set[str]], k: int) -> float:
    """Mean over queries of the share of a query's relevant ids found in its first `k` results."""
    _check(retrieved_ids, relevant)
    if k < 1:
        raise TuneloopError(f"recall@k needs k >= 1 (got {k})")
    return float(np.mean([len(set(ids[:k]) & rel) / len(rel) for ids, rel in zip(retrieved_ids, relevant)]))


def mrr(retrieved_ids: list[list[str]], relevant: list[set[str]]) -> float:
    """Mean reciprocal rank of the first relevant result (0 for a query where none was retrieved)."""
    _check(retrieved_ids, relevant)
    return float(np.mean([next((1 / r for r, i in enumerate(ids, 1) if i in rel), 0.0)
                          for ids, rel in zip(retrieved_ids, relevant)]))


def groundedness(answer: str, contexts: list[str], threshold: float = 0.6, embed: Embed | None = None) -> float | None:
    """Share of answer sentences supported by the contexts (cosine >= threshold); None for an empty answer."""
    claims = split_sentences(answer)
    if not claims:
        return None
    evidence = [s for c in contexts for s in [c, *split_sentences(c)] if s.strip()]
    if not evidence:
        return 0.0
    if embed is None:
        from tuneloop.models.embed import embed
    vectors = _unit(embed(claims + evidence))
    similarity = vectors[: len(claims)] @ vectors[len(claims):].T
    return float(np.mean(similarity.max(axis=1) >= threshold))


def _check(retrieved_ids: list[list[str]], relevant: list[set[str]]) -> None:
    if len(retrieved_ids) != len(relevant):
        raise TuneloopError(f"{len(retrieved_ids)} result lists but {len(relevant)} relevance sets; give one per query")
    if not relevant:
        raise TuneloopError("no queries to score")
    for i, rel in enumerate(relevant):
        if not rel:
            raise TuneloopError(f"query {i} has no relevant ids; label at least one or leave the query out")


def _unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
