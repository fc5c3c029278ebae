"""The RAG prompt template: numbered passages, one layout for training and serving, and citations."""

from __future__ import annotations

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.rag import DEFAULT_TEMPLATE, Chunk, Hit, augment, render_context, sources

HITS = [Hit(Chunk("faq.md::0", "faq.md", "/abs/faq.md", "FAQ", "Returns are free for {30} days."), 0.032, 1, 2),
        Hit(Chunk("ship.md::1", "ship.md", "/abs/ship.md", None, "Parcels ship daily."), 0.016, None, 1)]


def test_render_context_numbers_passages_and_leaves_the_question_placeholder():
    prompt = render_context(HITS)
    assert "Context:\n[1] (faq.md) Returns are free for {30} days.\n[2] (ship.md) Parcels ship daily.\n\nQuestion: {question}" in prompt
    assert prompt.startswith("Use the context to answer.")
    assert render_context([h.chunk for h in HITS], question="Q?") == render_context(HITS, question="Q?")
    assert render_context([], question="Q?").count("(no relevant passages found)") == 1


def test_braces_in_passages_or_questions_are_never_read_as_placeholders():
    template = "{question} | {context}"
    rendered = render_context(HITS[:1], template, question="what is {context}?")
    assert rendered == "what is {context}? | [1] (faq.md) Returns are free for {30} days."


def test_augment_rewrites_only_the_last_user_message_in_a_copy():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"}, {"role": "user", "content": "How long do returns take?"}]
    original = [dict(m) for m in messages]
    out = augment(messages, HITS)
    assert messages == original  # the input is untouched
    assert out[:3] == original[:3]
    assert out[3] == {"role": "user", "content": render_context(HITS, DEFAULT_TEMPLATE, "How long do returns take?")}
    assert out[3]["content"].endswith("Question: How long do returns take?")
    with pytest.raises(TuneloopError, match="no user message"):
        augment([{"role": "system", "content": "x"}], HITS)


def test_sources_lists_citations_in_prompt_order():
    assert sources(HITS) == [
        {"id": "faq.md::0", "doc_id": "faq.md", "source": "/abs/faq.md", "title": "FAQ", "score": 0.032},
        {"id": "ship.md::1", "doc_id": "ship.md", "source": "/abs/ship.md", "title": None, "score": 0.016},
    ]
