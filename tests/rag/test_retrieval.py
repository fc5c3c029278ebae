"""Retrieval quality on a labelled corpus: hybrid search puts the relevant chunk first for every query,
including code look-ups that defeat embeddings and paraphrases that defeat keywords."""

from __future__ import annotations

import pytest

from tests.rag.corpus import QUERIES, write_corpus
from tuneloop.rag import KnowledgeBase, mrr, recall_at_k


@pytest.fixture(scope="module")
def kb(tmp_path_factory) -> KnowledgeBase:
    root = tmp_path_factory.mktemp("rag")
    return KnowledgeBase.build([write_corpus(root / "docs")], root / "kb")


@pytest.fixture(scope="module")
def rankings(kb) -> dict[str, list[list[str]]]:
    return {mode: [[h.chunk.id for h in kb.search(q, k=10, mode=mode)] for q, _, _ in QUERIES]
            for mode in ("hybrid", "dense", "bm25")}


def test_every_labelled_chunk_exists(kb):
    ids = {c["id"] for c in kb.documents()}
    assert len(ids) >= 12
    for query, relevant, _ in QUERIES:
        assert any(h.chunk.id == relevant for h in kb.search(query, k=len(kb), mode="dense")), relevant


def test_hybrid_ranks_the_relevant_chunk_first_for_every_query(rankings):
    misses = [(q, ids[:3]) for (q, rel, _), ids in zip(QUERIES, rankings["hybrid"]) if ids[0] != rel]
    assert not misses


def test_hybrid_beats_or_equals_each_retriever_alone(rankings):
    relevant = [{rel} for _, rel, _ in QUERIES]
    score = {mode: (recall_at_k(ids, relevant, 1), mrr(ids, relevant)) for mode, ids in rankings.items()}
    assert score["hybrid"] == (1.0, 1.0)
    for single in ("dense", "bm25"):
        assert score["hybrid"][0] >= score[single][0] and score["hybrid"][1] >= score[single][1]
        assert score[single][1] < 1.0  # each alone misses something the fusion finds


def test_codes_need_keywords_and_paraphrases_need_embeddings(rankings):
    for (query, rel, kind), dense, bm25 in zip(QUERIES, rankings["dense"], rankings["bm25"]):
        if kind == "keyword":
            assert dense[0] != rel and bm25[0] == rel, query
        elif kind == "paraphrase":
            assert dense[0] == rel and rel not in bm25, query


def test_hits_carry_both_ranks_and_the_fused_score(kb):
    hits = kb.search("What does error E-1042 mean?", k=3)
    top = hits[0]
    assert top.chunk.id == "dishwasher.md::0" and top.bm25_rank == 1 and top.dense_rank > 1
    assert top.score == pytest.approx(1 / (60 + top.dense_rank) + 1 / (60 + top.bm25_rank))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    dense = kb.search("molten rock bursting out of a mountain", k=2, mode="dense")
    assert dense[0].bm25_rank is None and dense[0].dense_rank == 1 and 0 < dense[0].score <= 1
