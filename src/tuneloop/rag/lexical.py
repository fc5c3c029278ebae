"""Keyword retrieval: BM25 (bm25s) over chunk texts, with a tokenizer that keeps product codes whole.

"XR-4400" or "v2.1" is indexed both as the compound token and as its parts, so a query naming the
exact code matches it strongly while a query with only "4400" still matches. Stopwords are dropped;
there is no stemming (the dense side covers paraphrases).

The index is rebuilt from the chunk texts rather than stored: building takes milliseconds for
thousands of chunks (about a second per hundred thousand), and one source of truth (chunks.jsonl)
cannot disagree with a saved BM25 file after an incremental add or remove.
"""

from __future__ import annotations

import re

import numpy as np
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from tuneloop.extras import require

_TOKEN = re.compile(r"[^\W_]+(?:[-_./][^\W_]+)*")
# The 318-word list rather than bm25s' 33: question words ("how", "where", "should") otherwise match junk.
_STOPWORDS = frozenset(ENGLISH_STOP_WORDS)


def tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group(0)
        parts = re.split(r"[-_./]", token)
        tokens += [token] if len(parts) == 1 else [token, *parts]
    # Single characters (the "e" of "E-1042") match everything and nothing.
    return [t for t in tokens if len(t) > 1 and t not in _STOPWORDS]


class BM25:
    """BM25 ranking over a fixed list of texts; results are positions in that list."""

    def __init__(self, texts: list[str]) -> None:
        self.size = len(texts)
        require("rag", "keyword retrieval (BM25)")
        import bm25s

        self._retriever = bm25s.BM25()
        if texts:
            self._retriever.index([tokenize(t) for t in texts], show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(position, score) of the best `k` texts sharing at least one term with the query."""
        tokens = tokenize(query)
        if not self.size or not tokens or k < 1:
            return []
        positions, scores = self._retriever.retrieve([tokens], k=min(k, self.size), show_progress=False, n_threads=1)
        return [(int(p), float(s)) for p, s in zip(positions[0], scores[0]) if s > 0 and np.isfinite(s)]
