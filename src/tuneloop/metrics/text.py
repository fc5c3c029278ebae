"""Generation metrics against the reference text: BLEU and chrF (sacrebleu, corpus level) and
ROUGE-1/2/L F-measure (rouge-score, per sample) with a Unicode-aware tokenizer.

rouge-score's default tokenizer keeps only [a-z0-9], so any non-Latin answer would score 0; ours
splits on Unicode word characters and lowercases.
"""

from __future__ import annotations

import re

import sacrebleu
from rouge_score import rouge_scorer

from tuneloop.metrics import Context, corpus_metric, sample_metric

_WORD = re.compile(r"\w+", re.UNICODE)


class UnicodeTokenizer:
    def tokenize(self, text: str) -> list[str]:
        return _WORD.findall(text.lower())


_ROUGE = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer())


@corpus_metric
def bleu_chrf(predictions: list[str], references: list[str], ctx: Context) -> dict[str, float]:
    return {
        "bleu": sacrebleu.corpus_bleu(predictions, [references]).score,
        "chrf": sacrebleu.corpus_chrf(predictions, [references]).score,
    }


@sample_metric
def rouge(predictions: list[str], references: list[str], ctx: Context) -> list[dict[str, float]]:
    out = []
    for prediction, reference in zip(predictions, references):
        scores = _ROUGE.score(reference, prediction)
        out.append({name: scores[name].fmeasure for name in ("rouge1", "rouge2", "rougeL")})
    return out
