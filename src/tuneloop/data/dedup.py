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

import numpy as np
from datasketch import MinHash, MinHashLSH

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
    """MinHash LSH over word shingles of normalise(text): datasketch's MinHash sketches, our own banded index.

    Each indexed row keeps its sketch (num_perm 32-bit values in one numpy array) and one integer key per LSH
    band (a hash of the band's values), never the text. A query looks up its band keys in one dict per band
    and confirms each candidate by the estimated Jaccard (the share of equal values): about ten dict
    operations and a vector compare per row, where datasketch's MinHashLSH spent ~60 us in Python. Results
    depend only on the texts, their order and the constructor arguments: the same seed gives the same
    answers in every process.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, shingle: int = 3, seed: int = 1):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm!r}")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1 word, got {shingle!r}")
        self.threshold, self.shingle, self.num_perm = threshold, shingle, num_perm
        # Permutations are drawn once, here; each row's sketch starts as a copy of this empty one, which
        # shares the permutation array instead of redrawing it. crc32 is C-speed and, unlike the salted
        # built-in hash(), stable across processes; datasketch's default "affine32" scheme pre-mixes every
        # input hash with the MurmurHash3 finaliser, so CRC's linearity never reaches the permutations.
        self._empty = MinHash(num_perm=num_perm, seed=seed, hashfunc=zlib.crc32)
        self._bands, self._rows_per_band = _lsh_params(threshold, num_perm)
        # Odd 64-bit multipliers fold a band's values into one key (a collision only adds a candidate,
        # which the Jaccard check then drops).
        self._fold = np.random.default_rng(seed).integers(1, 2**63, size=self._rows_per_band, dtype=np.uint64) | np.uint64(1)
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(self._bands)]
        self._keys: list[str] = []
        self._sketches: list[np.ndarray] = []
        self._known: set[str] = set()

    def find_or_add(self, key: str, text: str | None = None, *, sketch: np.ndarray | None = None) -> tuple[str, float] | None:
        """If `text` is a near-duplicate of an indexed row, return (that row's key, estimated Jaccard) and do NOT index it;
        otherwise index it under `key` and return None. Pass `sketch` instead of `text` when it was computed
        elsewhere (the data stage sketches rows in worker processes, with an index built from the same arguments)."""
        if key in self._known:
            raise ValueError(f"key {key!r} is already indexed")
        if sketch is None:
            sketch = self.sketch(text or "")
        bands = self._band_keys(sketch)
        matches = self._matches(sketch, bands)
        if matches:
            return matches[0]
        number = len(self._keys)
        for bucket, band in zip(self._buckets, bands):
            held = bucket.get(band)
            if held is None:
                bucket[band] = number
            elif isinstance(held, list):
                held.append(number)
            else:
                bucket[band] = [held, number]
        self._keys.append(key)
        self._sketches.append(sketch)
        self._known.add(key)
        return None

    def query(self, text: str) -> list[tuple[str, float]]:
        """Indexed rows that are near-duplicates of text, most similar first, without adding it (used for leakage checks
        between splits)."""
        sketch = self.sketch(text)
        return self._matches(sketch, self._band_keys(sketch))

    def __len__(self) -> int:
        return len(self._keys)

    def sketch(self, text: str) -> np.ndarray:
        """MinHash of the text's shingles: num_perm values below 2^32, as uint32 (small to keep and to pickle)."""
        minhash = self._empty.copy()
        minhash.update_batch(_shingles(text, self.shingle))
        return minhash.hashvalues.astype(np.uint32)

    def _band_keys(self, sketch: np.ndarray) -> list[int]:
        used = sketch[: self._bands * self._rows_per_band].astype(np.uint64).reshape(self._bands, self._rows_per_band)
        return (used * self._fold).sum(axis=1).tolist()  # wraps around mod 2^64, as intended

    def _matches(self, sketch: np.ndarray, bands: list[int]) -> list[tuple[str, float]]:
        """LSH candidates whose estimated Jaccard reaches the threshold, most similar (then oldest) first."""
        candidates: set[int] = set()
        for bucket, band in zip(self._buckets, bands):
            held = bucket.get(band)
            if held is not None:
                candidates.update(held) if isinstance(held, list) else candidates.add(held)
        scored = []
        for number in candidates:
            similarity = float(np.count_nonzero(self._sketches[number] == sketch)) / self.num_perm
            if similarity >= self.threshold:  # LSH bands only suggest; this drops their false positives
                scored.append((-similarity, number))
        # Sorted on the insertion number too, so ties go to the older row whatever the set's order.
        return [(self._keys[number], -negated) for negated, number in sorted(scored)]
