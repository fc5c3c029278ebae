"""The profanity classifier of alt-profanity-check (MIT), predicted with numpy from a safetensors file.

The package ships a scikit-learn TF-IDF vectorizer and a calibrated linear SVM as joblib pickles; tuneloop
never unpickles, so `benchmarks/safety/convert_profanity_model.py` wrote their parameters once, at
development time, to `data/profanity.safetensors` (licence beside it) and checked that this module's
probabilities equal the package's. What the model does, reproduced here:

- tokens: `(?u)\\b\\w\\w+\\b` over the lowercased text (English stop words are not in the vocabulary, so
  dropping them first changes nothing); counts of vocabulary words, times their idf, L2-normalised;
- five linear SVMs (the calibration folds), each decision mapped through its Platt sigmoid
  `1 / (1 + exp(a * d + b))`; the probability is the mean of the five.

It was trained on English comments labelled profane or offensive: it knows English profanity, insults
and the commoner slurs; it does not know other languages, spelling tricks (f*ck, leetspeak), threats
or hate written in polite words.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from pathlib import Path

import numpy as np
from safetensors import safe_open

MODEL = Path(__file__).with_name("data") / "profanity.safetensors"
TOKEN = re.compile(r"(?u)\b\w\w+\b")


class ProfanityModel:
    """P(profane) for texts: `model.scores(["some text", ...])` -> array of floats in [0, 1]."""

    def __init__(self, path: Path = MODEL):
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata()
            self.idf, self.coef = f.get_tensor("idf"), f.get_tensor("coef")  # (V,), (folds, V)
            self.intercept, self.sigmoid = f.get_tensor("intercept"), f.get_tensor("sigmoid")  # (folds,), (folds, 2)
        words = meta["vocabulary"].split("\n")
        self.vocabulary = {word: i for i, word in enumerate(words)}
        self.source = meta.get("source", "")
        if meta.get("token_pattern") != TOKEN.pattern or len(words) != self.idf.shape[0]:
            raise ValueError(f"{path}: not a model this module can predict (token pattern or vocabulary differ)")

    def scores(self, texts: list[str]) -> np.ndarray:
        rows, cols, counts = [], [], []
        get = self.vocabulary.get
        for i, text in enumerate(texts):
            found = Counter(j for j in map(get, TOKEN.findall(text.lower())) if j is not None)
            rows += [i] * len(found)
            cols += found.keys()
            counts += found.values()
        n = len(texts)
        rows_a, cols_a = np.asarray(rows, dtype=np.intp), np.asarray(cols, dtype=np.intp)
        weights = np.asarray(counts, dtype=np.float64) * self.idf[cols_a]
        norms = np.sqrt(np.bincount(rows_a, weights * weights, minlength=n))
        norms[norms == 0] = 1.0  # no known word: the zero vector, as scikit-learn leaves it
        weights /= norms[rows_a]
        # Not in place: with no known word at all, bincount returns integers.
        decisions = self.intercept[:, None] + np.stack([np.bincount(rows_a, weights * fold[cols_a], minlength=n) for fold in self.coef])
        a, b = self.sigmoid[:, :1], self.sigmoid[:, 1:]
        return (1.0 / (1.0 + np.exp(a * decisions + b))).mean(axis=0)


@functools.cache
def default_model() -> ProfanityModel:
    """The shipped model, loaded once per process."""
    return ProfanityModel()
