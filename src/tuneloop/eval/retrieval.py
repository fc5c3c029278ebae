"""Evaluation with a knowledge base (eval.rag_index): the RAG baseline answers from retrieved passages,
and retrieval itself is scored: recall@k and MRR against the passages each test row says are relevant
(`metadata.relevant`: document ids or chunk ids), and groundedness of every system's answers (share of
answer sentences supported by the retrieved passages, MiniLM cosine)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from tuneloop.rag.index import Hit, KnowledgeBase
from tuneloop.rag.metrics import groundedness, mrr, recall_at_k


@functools.cache
def load_knowledge(path: Path) -> KnowledgeBase:
    return KnowledgeBase.load(path)


def retrieve(knowledge: KnowledgeBase, questions: list[str], k: int) -> list[list[Hit]]:
    return [knowledge.search(q, k=k) for q in questions]


def retrieval_summary(hits: list[list[Hit]], rows: list[dict], outputs: dict[str, list[str]], k: int) -> dict:
    relevant = [set((row.get("metadata") or {}).get("relevant") or []) for row in rows]
    labelled = [i for i, rel in enumerate(relevant) if rel]
    summary: dict = {"k": k, "labelled_rows": len(labelled)}
    if labelled:
        retrieved = [[h.chunk.id if any("::" in r for r in relevant[i]) else h.chunk.doc_id for h in hits[i]] for i in labelled]
        wanted = [relevant[i] for i in labelled]
        summary[f"recall@{k}"] = recall_at_k(retrieved, wanted, k)
        summary["mrr"] = mrr(retrieved, wanted)
    contexts = [[h.chunk.text for h in row] for row in hits]
    summary["groundedness"] = {}
    for system, answers in outputs.items():
        scores = [g for g in (groundedness(a, c) for a, c in zip(answers, contexts)) if g is not None]
        summary["groundedness"][system] = float(np.mean(scores)) if scores else None
    return summary
