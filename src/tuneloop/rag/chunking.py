"""Chunking: cut a document into passages small enough to embed and to quote in a prompt.

Boundaries are chosen from the largest unit down: a Markdown heading always starts a new chunk
(and its heading trail, e.g. "Install > Linux", is kept as the first line of every chunk under it,
so a passage still says what it is about); within a section whole paragraphs are packed while they
fit; a paragraph that does not fit is split into sentences; a sentence longer than `max_words` is cut
into word windows. Consecutive chunks of one section share up to `overlap` words (whole trailing
sentences where they fit), so an answer straddling a boundary is still found. `max_words` bounds
the body of a chunk; the heading line comes on top.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuneloop.errors import TuneloopError
from tuneloop.rag.loaders import Document

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by space and a capital,
# digit or opening quote/bracket: "e.g. foo" and "3.5 mm" stay whole.
_LINE_START = re.compile(r"^\s*([-*+]\s|\d+[.)]\s|\|)")  # list items and table rows keep their lines
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]?\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Chunk:
    id: str
    doc_id: str
    source: str
    title: str | None
    text: str


@dataclass
class _Sentence:
    text: str
    paragraph: int  # paragraphs are joined by a blank line
    sep: str = " "  # joins it to the sentence before it in its paragraph: a space, or a newline for lines

    @property
    def words(self) -> int:
        return len(self.text.split())


def chunk(doc: Document, max_words: int = 120, overlap: int = 30) -> list[Chunk]:
    """The document's chunks, in reading order, with ids "<doc id>::<i>"; never an empty chunk."""
    if max_words < 1 or not 0 <= overlap < max_words:
        raise TuneloopError(f"chunking needs max_words >= 1 and 0 <= overlap < max_words (got {max_words}, {overlap})")
    texts: list[str] = []
    for trail, paragraphs in sections(doc.text):
        prefix = " > ".join(trail)
        for body in _pack(paragraphs, max_words, overlap):
            texts.append(f"{prefix}\n\n{body}" if prefix else body)
    return [Chunk(f"{doc.id}::{i}", doc.id, doc.source, doc.title, text) for i, text in enumerate(texts)]


def sections(text: str) -> list[tuple[list[str], list[str]]]:
    """(heading trail, paragraphs) per section; fenced code blocks are never split or read as headings."""
    result: list[tuple[list[str], list[str]]] = [([], [])]
    trail: list[tuple[int, str]] = []
    lines: list[str] = []
    fenced = False

    def end_paragraph() -> None:
        if any(line.strip() for line in lines):
            result[-1][1].append("\n".join(lines).strip())
        lines.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            lines.append(line)
            continue
        heading = None if fenced else _HEADING.match(line)
        if heading:
            end_paragraph()
            level = len(heading.group(1))
            trail = [(lvl, name) for lvl, name in trail if lvl < level] + [(level, heading.group(2))]
            result.append(([name for _, name in trail], []))
        elif not line.strip() and not fenced:
            end_paragraph()
        else:
            lines.append(line)
    end_paragraph()
    return [(names, paragraphs) for names, paragraphs in result if paragraphs]


def split_sentences(text: str) -> list[str]:
    """Sentences of a run of prose, whitespace collapsed."""
    flat = " ".join(text.split())
    return [s for s in _SENTENCE_END.split(flat) if s.strip()] if flat else []


def _units(paragraph: str, index: int) -> list[_Sentence]:
    """A paragraph's sentences; list items, table rows and code lines keep their own lines."""
    if _FENCE.match(paragraph):
        return [_Sentence(line, index, "\n") for line in paragraph.splitlines() if line.strip()]
    lines: list[str] = []
    for line in paragraph.splitlines():
        if lines and not _LINE_START.match(line):
            lines[-1] += " " + line  # a wrapped line of prose continues the one before
        else:
            lines.append(line)
    units = []
    for line in lines:
        units += [_Sentence(s, index, "\n" if i == 0 else " ") for i, s in enumerate(split_sentences(line))]
    return units


def _pack(paragraphs: list[str], max_words: int, overlap: int) -> list[str]:
    chunks: list[list[_Sentence]] = []
    current: list[_Sentence] = []
    fresh = 0  # words in `current` that are not carried over from the previous chunk

    def flush(need: int) -> None:
        nonlocal current, fresh
        chunks.append(current)
        current = _tail(current, min(overlap, max_words - need))
        fresh = 0

    for index, paragraph in enumerate(paragraphs):
        sentences = _units(paragraph, index)
        size = sum(s.words for s in sentences)
        if size <= max_words:
            if _words(current) + size > max_words and fresh:
                flush(size)  # the paragraph fits in a chunk of its own: break before it, not inside it
            if _words(current) + size <= max_words:
                current, fresh = current + sentences, fresh + size
                continue
        for sentence in sentences:
            # Windows leave room for the overlap, so consecutive windows still share context.
            for piece in _windows(sentence, max_words - overlap):
                if _words(current) + piece.words > max_words and fresh:
                    flush(piece.words)
                while _words(current) + piece.words > max_words:
                    current = current[1:]  # drop carried-over context until the new text fits
                current.append(piece)
                fresh += piece.words
    if fresh:
        chunks.append(current)
    return [_join(c) for c in chunks]


def _tail(sentences: list[_Sentence], budget: int) -> list[_Sentence]:
    """The last sentences totalling at most `budget` words; the last `budget` words if none fits whole."""
    if budget <= 0 or not sentences:
        return []
    tail: list[_Sentence] = []
    for sentence in reversed(sentences):
        if _words(tail) + sentence.words > budget:
            break
        tail.insert(0, sentence)
    if not tail:
        last = sentences[-1]
        tail = [_Sentence(" ".join(last.text.split()[-budget:]), last.paragraph, last.sep)]
    return tail


def _windows(sentence: _Sentence, size: int) -> list[_Sentence]:
    words = sentence.text.split()
    if len(words) <= size:
        return [sentence]
    return [_Sentence(" ".join(words[i:i + size]), sentence.paragraph, sentence.sep if i == 0 else " ")
            for i in range(0, len(words), size)]


def _words(sentences: list[_Sentence]) -> int:
    return sum(s.words for s in sentences)


def _join(sentences: list[_Sentence]) -> str:
    out = sentences[0].text
    for before, sentence in zip(sentences, sentences[1:]):
        out += (sentence.sep if sentence.paragraph == before.paragraph else "\n\n") + sentence.text
    return out
