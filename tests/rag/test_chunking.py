"""Chunking: headings start chunks, paragraphs stay whole when they fit, long text is packed with overlap."""

from __future__ import annotations

import re

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.rag import Document, chunk


def doc(text: str) -> Document:
    return Document("d.md", "/x/d.md", text, "T")


def sentences(prefix: str, n: int, words: int = 10) -> list[str]:
    return [f"{prefix}{i} " + " ".join(["word"] * (words - 2)) + " end." for i in range(n)]


def test_headings_start_new_chunks_and_stay_as_context():
    text = "# Guide\n\nIntro text.\n\n## Install\nDownload it.\n\n### Linux\nUse apt.\n\n## Use\nRun it."
    chunks = chunk(doc(text))
    assert [c.text for c in chunks] == ["Guide\n\nIntro text.", "Guide > Install\n\nDownload it.",
                                        "Guide > Install > Linux\n\nUse apt.", "Guide > Use\n\nRun it."]
    assert [c.id for c in chunks] == ["d.md::0", "d.md::1", "d.md::2", "d.md::3"]
    assert all((c.doc_id, c.source, c.title) == ("d.md", "/x/d.md", "T") for c in chunks)


def test_a_hash_inside_a_code_fence_is_not_a_heading():
    text = "Intro.\n\n```bash\n# install it\nmake\n```\n\nAfter."
    [single] = chunk(doc(text))
    assert single.text == "Intro.\n\n```bash\n# install it\nmake\n```\n\nAfter."


def test_paragraphs_are_kept_whole_when_they_fit():
    paragraphs = [" ".join(sentences(f"P{p}s", 5)) for p in range(3)]  # 50 words each
    chunks = chunk(doc("\n\n".join(paragraphs)), max_words=120, overlap=30)
    assert chunks[0].text == paragraphs[0] + "\n\n" + paragraphs[1]  # the break falls between paragraphs
    assert chunks[1].text.endswith(paragraphs[2])
    assert len(chunks) == 2


def test_long_text_is_packed_by_sentence_with_overlap():
    parts = sentences("S", 30)  # one 300-word paragraph of 10-word sentences
    chunks = chunk(doc(" ".join(parts)), max_words=120, overlap=30)
    assert len(chunks) > 2
    for before, after in zip(chunks, chunks[1:]):
        b, a = re.findall(r"S\d+ [^.]*\.", before.text), re.findall(r"S\d+ [^.]*\.", after.text)
        shared = [s for s in b if s in a]
        assert shared and shared == b[-len(shared):] == a[:len(shared)]  # the tail of one opens the next
        assert sum(len(s.split()) for s in shared) <= 30
        assert before.text.endswith(b[-1]) and after.text.startswith(a[0])  # whole sentences only
    for c in chunks:
        assert 0 < len(c.text.split()) <= 120
    for s in parts:  # nothing is lost
        assert any(s.rstrip(".") in c.text for c in chunks)


def test_a_sentence_longer_than_the_budget_is_cut_into_windows():
    words = [f"w{i}" for i in range(250)]
    chunks = chunk(doc(" ".join(words)), max_words=100, overlap=20)
    assert all(0 < len(c.text.split()) <= 100 for c in chunks)
    covered = {w for c in chunks for w in c.text.split()}
    assert covered == set(words)
    assert chunks[1].text.split()[:20] == chunks[0].text.split()[-20:]  # overlap falls back to the last words


def test_no_overlap_means_disjoint_chunks_and_never_an_empty_chunk():
    chunks = chunk(doc(" ".join(sentences("S", 30))), max_words=50, overlap=0)
    assert sum(len(c.text.split()) for c in chunks) == 300
    assert chunk(doc("   \n\n  ")) == []
    assert all(c.text.strip() for c in chunk(doc("# A\n\n# B\n\ntext")))


def test_invalid_parameters_are_refused():
    with pytest.raises(TuneloopError, match="overlap < max_words"):
        chunk(doc("text"), max_words=30, overlap=30)
