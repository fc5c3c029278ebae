"""text_similarity: how close the rendered input is to the rendered reference, in [0, 1].

fuzzy_match: difflib's ratio (2 * matching characters / total characters; rapidfuzz's ratio is the same
number, faster, but is not a dependency); bleu and chrf: sacrebleu's sentence scores / 100; rouge_1/2/l:
F-measure with the evaluation's Unicode tokenizer (metrics/text.py); semantic: cosine of the MiniLM
embeddings (models/embed.py, loaded on first use), negative cosines counted as 0. With pass_threshold
the score becomes 1.0 at or above it and 0.0 below.
"""

from __future__ import annotations

import difflib
from functools import partial

import sacrebleu
from rouge_score import rouge_scorer

from tuneloop.graders.grades import Grades, check_lengths, collect
from tuneloop.graders.specs import TextSimilaritySpec
from tuneloop.graders.templates import render, scope
from tuneloop.metrics.text import UnicodeTokenizer
from tuneloop.models.embed import embed  # MiniLM itself loads on the first semantic grade

_BLEU = sacrebleu.BLEU(effective_order=True)  # effective order: short sentences are not 0 for lack of 4-grams
_CHRF = sacrebleu.CHRF()
_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer())


def fuzzy_match(text: str, reference: str) -> float:
    return difflib.SequenceMatcher(None, text, reference, autojunk=False).ratio()


def bleu(text: str, reference: str) -> float:
    return _unit(_BLEU.sentence_score(text, [reference]).score / 100)


def chrf(text: str, reference: str) -> float:
    return _unit(_CHRF.sentence_score(text, [reference]).score / 100)


def rouge(kind: str, text: str, reference: str) -> float:
    return _ROUGE.score(reference, text)[kind].fmeasure


SCORERS = {"fuzzy_match": fuzzy_match, "bleu": bleu, "chrf": chrf, "rouge_1": partial(rouge, "rouge1"),
           "rouge_2": partial(rouge, "rouge2"), "rouge_l": partial(rouge, "rougeL")}


def semantic(texts: list[str], references: list[str]) -> list[float]:
    cosines = (embed(texts) * embed(references)).sum(axis=1)
    return [_unit(float(c)) for c in cosines]


def _unit(value: float) -> float:
    # sacrebleu's 100 comes back as 100.00000000000004, and cosines of normalised vectors can be negative.
    return min(max(value, 0.0), 1.0)


class TextSimilarity:
    def __init__(self, spec: TextSimilaritySpec):
        self.spec, self.name = spec, spec.name

    def grade(self, outputs: list[str], items: list[dict]) -> Grades:
        check_lengths(outputs, items)
        names = [scope(output, item) for output, item in zip(outputs, items)]
        texts = [render(self.spec.input, n) for n in names]
        references = [render(self.spec.reference, n) for n in names]
        outcomes = self._scores(texts, references)
        threshold = self.spec.pass_threshold
        if threshold is not None:
            outcomes = [o if isinstance(o, str) else float(o >= threshold) for o in outcomes]
        return collect("text_similarity", self.name, outcomes)

    def _scores(self, texts: list[str], references: list[str]) -> list[float | str]:
        metric = self.spec.evaluation_metric
        if metric == "semantic":
            try:
                return list(semantic(texts, references))
            except Exception as err:  # the whole batch is embedded at once: every sample shares the failure
                return [f"{type(err).__name__}: {err}"] * len(texts)
        score = SCORERS[metric]
        outcomes: list[float | str] = []
        for text, reference in zip(texts, references):
            try:
                outcomes.append(score(text, reference))
            except Exception as err:
                outcomes.append(f"{type(err).__name__}: {err}")
        return outcomes
