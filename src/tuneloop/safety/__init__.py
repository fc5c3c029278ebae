"""Harmful-content screening, offline: a library any stage may use (data rows, evaluation outputs, served
responses), so that "harmful" means the same thing in all of them.

    from tuneloop.safety import screen
    screen(["thanks, that fixed it", "you useless idiot"])  # -> [None, Flag(rule="classifier", score=0.98, ...)]

Two detectors, cheapest first, after allow-listed terms are blanked out (blocklist.py):
- blocklist: whole-word, case-insensitive terms and phrases: the shipped default list (data/blocklist.txt:
  self-harm incitement, threats, spelled-around profanity, common insults in five other languages) plus the
  user's files and terms;
- classifier: alt-profanity-check's linear model (classifier.py), flagged at P(offensive) >= threshold.
It covers English profanity, insults and common slurs, and the listed phrases; it misses most threats and
hate written in polite words, other languages beyond the listed terms, and new spellings. Measured figures:
benchmarks/README.md ("Harmful-content screening").
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from tuneloop.config import SafetyConfig
from tuneloop.safety.blocklist import DEFAULT, Blocklist, read_terms
from tuneloop.safety.classifier import default_model


@dataclass(frozen=True)
class Flag:
    """Why a text was flagged: a blocklist `term`, or the classifier's `score` at or above `threshold`."""

    rule: Literal["blocklist", "classifier"]
    score: float | None  # the classifier's P(offensive); None when the classifier is off
    threshold: float | None
    term: str | None = None

    def __str__(self) -> str:
        if self.rule == "blocklist":
            return f"blocklist term '{self.term}'"
        return f"classifier score {self.score:.2f} >= {self.threshold:g}"


class Screen:
    """A configured screen: `screen(texts)` -> one Flag or None per text, in order."""

    def __init__(self, cfg: SafetyConfig | None = None):
        cfg = cfg or SafetyConfig()
        terms = [*(read_terms(DEFAULT) if cfg.default_blocklist else []), *cfg.terms]
        for path in cfg.blocklists:
            terms += read_terms(path)
        self.blocklist = Blocklist(terms, cfg.allow)
        self.threshold = cfg.threshold
        self.model = default_model() if cfg.threshold is not None else None

    def __call__(self, texts: Sequence[str]) -> list[Flag | None]:
        cleared = [self.blocklist.clear(text) for text in texts]
        scores = self.model.scores(cleared) if self.model is not None and cleared else [None] * len(cleared)
        flags: list[Flag | None] = []
        for text, score in zip(cleared, scores):
            score = None if score is None else float(score)
            term = self.blocklist.find(text)
            if term is not None:
                flags.append(Flag("blocklist", score, self.threshold, term))
            elif score is not None and score >= self.threshold:
                flags.append(Flag("classifier", score, self.threshold))
            else:
                flags.append(None)
        return flags


@functools.cache
def default_screen() -> Screen:
    """The screen with default settings (shipped classifier and list), built once per process."""
    return Screen()


def screen(texts: Sequence[str], cfg: SafetyConfig | None = None) -> list[Flag | None]:
    """Flags for `texts` under `cfg` (default settings when None)."""
    return (default_screen() if cfg is None else Screen(cfg))(texts)
