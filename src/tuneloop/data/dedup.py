"""Exact and near-duplicate detection for training rows, streamed one row at a time.

The data stage keeps the first occurrence of a row and reports later copies with a pointer to the kept
row. Both detectors compare `normalise(text)`: exact duplicates by its sha256 (`exact_key`), near
duplicates by MinHash LSH over its word shingles (`NearDuplicateIndex`, built on datasketch).
"""

from __future__ import annotations

import hashlib
import unicodedata
import zlib
from functools import lru_cache

from datasketch import LeanMinHash, MinHash, MinHashLSH

# Every Unicode punctuation character (categories P*) in the Basic Multilingual Plane. Scanning all
# 1.1M code points costs ~0.3 s at import for a handful of rare historic-script marks, so we stop at
# U+FFFF; NFKC has already folded full-width and compatibility forms into this range.
_PUNCTUATION = "".join(
    char for char in map(chr, range(0x10000)) if unicodedata.category(char).startswith("P")
)

_ASCII_PUNCTUATION = "".join(char for char in _PUNCTUATION if char.isascii())

# LSH only proposes candidates; each is confirmed by its estimated Jaccard, so a false positive costs
# one cheap comparison while a false negative silently loses a duplicate. Weighting misses 19:1 picks
# more, shorter bands: at threshold 0.8 with 64 permutations a pair at exactly 0.8 becomes a candidate
# ~95% of the time instead of ~36% with datasketch's default equal weights.
_LSH_WEIGHTS = (0.05, 0.95)


def normalise(text: str) -> str:
    """Case-fold, Unicode NFKC, collapse whitespace, strip punctuation at token edges: the text both detectors compare."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # str.strip scans its character set for every edge character: the ASCII subset is enough for ASCII
    # text and ~20x cheaper than the full Unicode set.
    marks = _ASCII_PUNCTUATION if folded.isascii() else _PUNCTUATION
    tokens = (token.strip(marks) for token in folded.split())
    return " ".join(token for token in tokens if token)


def exact_key(text: str) -> str:
    """sha256 hex of normalise(text)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()


def _shingles(text: str, size: int) -> list[bytes]:
    """Overlapping `size`-word shingles of normalise(text); a text shorter than that is one shingle."""
    words = normalise(text).encode("utf-8").split(b" ")
    if len(words) < size:
        # Whole text as one shingle, so two identical short texts still share a set element.
        return [b" ".join(words)]
    return [b" ".join(words[start : start + size]) for start in range(len(words) - size + 1)]


@lru_cache(maxsize=None)
def _lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) for the LSH; cached because datasketch finds them by numeric integration (~0.2 s)."""
    try:
        probe = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_LSH_WEIGHTS)
    except ValueError:
        # Near threshold 1 the optimum is a single band, which datasketch refuses; two half-length
        # bands still propose almost every pair that close, and confirmation drops the rest.
        return 2, num_perm // 2
    return probe.b, probe.r


class NearDuplicateIndex:
    """MinHash LSH (datasketch) over word shingles of normalise(text).

    Keeps one LeanMinHash per indexed row (num_perm 32-bit values) plus the LSH buckets, never the text.
    Results depend only on the texts, their order and the constructor arguments: the same seed gives the
    same answers in every process.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, shingle: int = 3, seed: int = 1):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm!r}")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1 word, got {shingle!r}")
        self.threshold = threshold
        self.shingle = shingle
        # Permutations are drawn once, here; each row's sketch starts as a copy of this empty one, which
        # shares the permutation array instead of redrawing it. crc32 is C-speed and, unlike the salted
        # built-in hash(), stable across processes; datasketch's default "affine32" scheme pre-mixes every
        # input hash with the MurmurHash3 finaliser, so CRC's linearity never reaches the permutations.
        self._empty = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32)
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=_lsh_params(threshold, num_perm))
        # key -> (insertion number, sketch); the number breaks similarity ties in favour of the older row.
        self._rows: dict[str, tuple[int, LeanMinHash]] = {}

    def find_or_add(self, key: str, text: str | None = None, *, sketch: LeanMinHash | None = None) -> tuple[str, float] | None:
        """If `text` is a near-duplicate of an indexed row, return (that row's key, estimated Jaccard) and do NOT index it;
        otherwise index it under `key` and return None. Pass `sketch` instead of `text` when it was computed
        elsewhere (the data stage sketches rows in worker processes, with an index built from the same arguments)."""
        if key in self._rows:
            raise ValueError(f"key {key!r} is already indexed")
        if sketch is None:
            sketch = self.sketch(text or "")
        matches = self._matches(sketch)
        if matches:
            return matches[0]
        self._lsh.insert(key, sketch, check_duplication=False)  # checked above, against our own dict
        self._rows[key] = (len(self._rows), sketch)
        return None

    def query(self, text: str) -> list[tuple[str, float]]:
        """Indexed rows that are near-duplicates of text, most similar first, without adding it (used for leakage checks
        between splits)."""
        return self._matches(self.sketch(text))

    def __len__(self) -> int:
        return len(self._rows)

    def sketch(self, text: str) -> LeanMinHash:
        """MinHash of the text's shingles, frozen: indexed rows never change, and lean sketches are smaller."""
        minhash = self._empty.copy()
        minhash.update_batch(_shingles(text, self.shingle))
        return LeanMinHash(minhash)

    def _matches(self, sketch: LeanMinHash) -> list[tuple[str, float]]:
        """LSH candidates whose estimated Jaccard reaches the threshold, most similar (then oldest) first."""
        scored = []
        for key in self._lsh.query(sketch):
            order, indexed = self._rows[key]
            similarity = sketch.jaccard(indexed)
            if similarity >= self.threshold:  # LSH bands only suggest; this drops its false positives
                scored.append((-similarity, order, key))
        # Sorting on the insertion number too: LSH returns a set, whose order varies between processes.
        return [(key, -negated) for negated, _, key in sorted(scored)]
