"""The one prompt template that puts retrieved context in front of a question, at training and at inference.

Training examples built for RAG and requests served with retrieval must render context identically,
or the model is tuned on one layout and asked in another. Passages are numbered [1], [2], ... so an
answer can cite them, and labelled with their document id (the file path relative to its root): short,
and the same on every machine, unlike the absolute source path.
"""

from __future__ import annotations

import re
from typing import Any

from tuneloop.errors import TuneloopError
from tuneloop.rag.chunking import Chunk
from tuneloop.rag.index import Hit

DEFAULT_TEMPLATE = ("Use the context to answer. If the context does not contain the answer, say so.\n\n"
                    "Context:\n{context}\n\nQuestion: {question}")
NO_CONTEXT = "(no relevant passages found)"


def render_context(hits: list[Hit | Chunk], template: str = DEFAULT_TEMPLATE, question: str | None = None) -> str:
    """The template with {context} filled; {question} too when given, else left as the placeholder."""
    passages = [f"[{n}] ({c.doc_id}) {c.text}" for n, c in enumerate(map(_chunk, hits), 1)]
    values = {"context": "\n".join(passages) or NO_CONTEXT, "question": question}

    def fill(match: re.Match) -> str:
        value = values[match.group(1)]
        return match.group(0) if value is None else value

    # One pass, so braces inside a passage or a question are never read as placeholders.
    return re.sub(r"\{(context|question)\}", fill, template)


def augment(messages: list[dict[str, Any]], hits: list[Hit | Chunk], template: str = DEFAULT_TEMPLATE) -> list[dict[str, Any]]:
    """A new message list whose last user message is the rendered template around its question."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if last is None:
        raise TuneloopError("cannot add context: the conversation has no user message")
    question = messages[last].get("content")
    if not isinstance(question, str):
        raise TuneloopError("cannot add context: the last user message's content must be a string")
    out = [dict(m) for m in messages]
    out[last]["content"] = render_context(hits, template, question)
    return out


def sources(hits: list[Hit]) -> list[dict[str, Any]]:
    """Citations for a response: {id, doc_id, source, title, score} per passage, in prompt order."""
    return [{"id": h.chunk.id, "doc_id": h.chunk.doc_id, "source": h.chunk.source, "title": h.chunk.title,
             "score": round(float(h.score), 6)} for h in hits]


def _chunk(hit: Hit | Chunk) -> Chunk:
    return hit.chunk if isinstance(hit, Hit) else hit
