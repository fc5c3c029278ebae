"""Exact and near-duplicate detection for training rows, streamed one row at a time.

The data stage keeps the first occurrence of a row and reports later copies with a pointer to the kept
row. Both detectors compare `normalise(text)`: exact duplicates by its sha256 (`exact_key`), near
duplicates by MinHash LSH over its word shingles (`NearDuplicateIndex`: rensa's R-MinHash sketches, our
own banded index).
"""

from __future__ import annotations

import hashlib
import struct
import unicodedata
from array import array
from functools import lru_cache

import numpy as np
from rensa import RMinHash

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
# ~95% of the time instead of ~36% with equal weights.
_LSH_WEIGHTS = (0.05, 0.95)

# A row's sketch as it is kept and crosses process boundaries: num_perm MinHash values (uint32) followed
# by one key per LSH band (int64), in one bytes object: one pickle item instead of ~17 per row.
Sketch = bytes

assert array("I").itemsize == 4 and array("q").itemsize == 8, "sketches assume 32-bit I and 64-bit q arrays"


def normalise(text: str) -> str:
    """Case-fold, Unicode NFKC, collapse whitespace, strip punctuation at token edges: the text both detectors compare."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    # str.strip scans its character set for every edge character: the ASCII subset is enough for ASCII
    # text and ~20x cheaper than the full Unicode set.
    marks = _ASCII_PUNCTUATION if folded.isascii() else _PUNCTUATION
    tokens = [token.strip(marks) for token in folded.split()]
    return " ".join(token for token in tokens if token) if "" in tokens else " ".join(tokens)


def exact_key(text: str) -> str:
    """sha256 hex of normalise(text)."""
    return normalised_key(normalise(text))


def normalised_key(normalised: str) -> str:
    """exact_key of a text already normalised (the data stage normalises each row once for both detectors)."""
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def shingles(normalised: str, size: int) -> list[str]:
    """Overlapping `size`-word shingles of a normalised text; a text of at most `size` words is one shingle."""
    words = normalised.split(" ")
    if len(words) <= size:
        # Whole text as one shingle, so two identical short texts still share a set element.
        return [normalised]
    return list(map(" ".join, zip(*(words[start:] for start in range(size)))))


@lru_cache(maxsize=None)
def lsh_params(threshold: float, num_perm: int, points: int = 1001) -> tuple[int, int]:
    """(bands, rows per band) minimising the weighted LSH miss and false-candidate rates (datasketch's rule,
    integrated on a grid of `points` similarities: the same choices, ~20 ms instead of ~0.2 s)."""
    pairs = np.array([(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)], dtype=np.float64)
    bands, rows = pairs[:, 0], pairs[:, 1]

    def mean_candidate_rate(low: float, high: float) -> np.ndarray:
        similarity = np.linspace(low, high, points)[:, None]
        rate = 1 - (1 - similarity**rows) ** bands  # P(some band equal) for each (bands, rows) pair
        return np.trapezoid(rate, dx=(high - low) / (points - 1), axis=0)

    false_candidates = mean_candidate_rate(0.0, threshold)
    misses = (1.0 - threshold) - mean_candidate_rate(threshold, 1.0)
    b, r = pairs[int(np.argmin(_LSH_WEIGHTS[0] * false_candidates + _LSH_WEIGHTS[1] * misses))]
    if b < 2:
        # Near threshold 1 the optimum is a single band; two half-length bands still propose almost every
        # pair that close, and confirmation drops the rest.
        return 2, num_perm // 2
    return int(b), int(r)


class NearDuplicateIndex:
    """MinHash LSH over word shingles of normalise(text): rensa's R-MinHash sketches, our own banded index.

    Each indexed row keeps its MinHash values (num_perm 32-bit values, as bytes) and one integer key per LSH
    band (its values folded by seeded odd multipliers), never the text. A query looks up its band keys in one
    dict per band and confirms each candidate by the estimated Jaccard (the share of equal values). Results
    depend only on the texts, their order and the constructor arguments (rensa's hashing is not salted per
    process): the same seed gives the same answers in every process.
    """

    def __init__(self, threshold: float = 0.8, num_perm: int = 64, shingle: int = 3, seed: int = 1):
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm!r}")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1 word, got {shingle!r}")
        self.threshold, self.shingle, self.num_perm, self.seed = threshold, shingle, num_perm, seed
        bands, rows_per_band = lsh_params(threshold, num_perm)
        self._bands, self._rows_per_band = bands, rows_per_band
        # Odd 64-bit multipliers fold a band's values into one key (a collision only adds a candidate, which
        # the Jaccard check then drops); keys keep 60 bits, the size of a two-digit Python int.
        self._fold = np.random.default_rng(seed).integers(1, 2**63, size=rows_per_band, dtype=np.uint64) | np.uint64(1)
        self._band_format = f"={bands}q"  # a format string, not a Struct, so the index still pickles
        self._buckets: list[dict[int, int | list[int]]] = [{} for _ in range(bands)]
        self._keys: list[str] = []
        # MinHash values of the indexed rows, one row each; capacity doubles, so appends are amortised O(1).
        self._values = np.empty((1024, num_perm), dtype=np.uint32)
        self._known: set[str] = set()

    def find_or_add(self, key: str, text: str | None = None, *, sketch: Sketch | None = None) -> tuple[str, float] | None:
        """If `text` is a near-duplicate of an indexed row, return (that row's key, estimated Jaccard) and do NOT index it;
        otherwise index it under `key` and return None. Pass `sketch` instead of `text` when it was computed
        elsewhere (the data stage sketches rows in worker processes, with an index built from the same arguments)."""
        if key in self._known:
            raise ValueError(f"key {key!r} is already indexed")
        values, bands = self._split(sketch if sketch is not None else self.sketch(text or ""))
        number = len(self._keys)
        # One setdefault per band both looks the row up and indexes it: most rows share no band, and a
        # near duplicate's few new entries are taken out again below.
        shared = [(bucket, band, held) for bucket, band in zip(self._buckets, bands) if (held := bucket.setdefault(band, number)) != number]
        if shared:
            candidates = {n for _, _, held in shared for n in (held if isinstance(held, list) else (held,))}
            matches = self._confirm(values, candidates)
            if matches:
                for bucket, band in zip(self._buckets, bands):
                    if bucket[band] == number:
                        del bucket[band]
                return matches[0]
            for bucket, band, held in shared:
                if isinstance(held, list):
                    held.append(number)
                else:
                    bucket[band] = [held, number]
        if number == len(self._values):
            self._values = np.concatenate([self._values, np.empty_like(self._values)])
        self._values[number] = np.frombuffer(values, dtype=np.uint32)
        self._keys.append(key)
        self._known.add(key)
        return None

    def query(self, text: str) -> list[tuple[str, float]]:
        """Indexed rows that are near-duplicates of text, most similar first, without adding it (used for leakage checks
        between splits)."""
        values, bands = self._split(self.sketch(text))
        candidates: set[int] = set()
        for bucket, band in zip(self._buckets, bands):
            held = bucket.get(band)
            if held is not None:
                candidates.update(held) if isinstance(held, list) else candidates.add(held)
        return self._confirm(values, candidates)

    def __len__(self) -> int:
        return len(self._keys)

    def sketch(self, text: str) -> Sketch:
        """The sketch of a text: R-MinHash of its shingles and the LSH band keys."""
        return self.sketch_many([normalise(text)])[0]

    def sketch_many(self, normalised: list[str]) -> list[Sketch]:
        """sketch() of many texts already normalised: the MinHash per text, the band keys for all at once
        (per text they cost more than the MinHash itself)."""
        if not normalised:
            return []
        minhash_values = b"".join(map(self._minhash, normalised))
        values = np.frombuffer(minhash_values, dtype=np.uint32).reshape(len(normalised), self.num_perm)
        used = values[:, : self._bands * self._rows_per_band].astype(np.uint64).reshape(len(normalised), self._bands, self._rows_per_band)
        keys = (used * self._fold).sum(axis=2, dtype=np.uint64) >> np.uint64(4)  # wraps around mod 2^64, as intended
        return [row.tobytes() for row in np.hstack([values.view(np.uint8), keys.astype(np.int64).view(np.uint8)])]

    def _minhash(self, normalised: str) -> bytes:
        minhash = RMinHash(self.num_perm, self.seed)
        minhash.update(shingles(normalised, self.shingle))
        return array("I", minhash.digest()).tobytes()

    def _split(self, sketch: Sketch) -> tuple[bytes, tuple[int, ...]]:
        """(MinHash values, band keys) of a sketch."""
        size = 4 * self.num_perm
        if len(sketch) != size + 8 * len(self._buckets):
            raise ValueError("sketch was made by an index with other arguments")
        return sketch[:size], struct.unpack_from(self._band_format, sketch, size)

    def _confirm(self, values: bytes, candidates: set[int]) -> list[tuple[str, float]]:
        """LSH candidates whose estimated Jaccard reaches the threshold, most similar (then oldest) first."""
        if not candidates:
            return []
        # All candidates in one vector compare: rows written from templates share bands with many others,
        # so at 1M rows a query has ~30 candidates on average.
        numbers = np.fromiter(candidates, dtype=np.int64, count=len(candidates))
        similarity = np.count_nonzero(self._values[numbers] == np.frombuffer(values, dtype=np.uint32), axis=1) / self.num_perm
        confirmed = similarity >= self.threshold  # LSH bands only suggest; this drops their false positives
        numbers, similarity = numbers[confirmed], similarity[confirmed]
        # Sorted on the insertion number too, so ties go to the older row whatever the set's order.
        order = np.lexsort((numbers, -similarity))
        return [(self._keys[number], similarity) for number, similarity in zip(numbers[order].tolist(), similarity[order].tolist())]
