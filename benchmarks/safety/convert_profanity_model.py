"""One-off, at development time: alt-profanity-check's joblib model -> tuneloop's safetensors file.

    .venv/bin/python benchmarks/safety/convert_profanity_model.py --wheel alt_profanity_check-1.9.1-py3-none-any.whl

alt-profanity-check (MIT; https://github.com/dimitrismistriotis/alt-profanity-check) ships a scikit-learn
TfidfVectorizer and a CalibratedClassifierCV over LinearSVC as joblib pickles. tuneloop never unpickles at
run time, so this script, run once by a developer on the wheel from PyPI (a trusted source, with the
scikit-learn and joblib versions it pins), reads them and writes their parameters to
src/tuneloop/safety/data/profanity.safetensors with the package's licence beside it. It checks that the
vectorizer is one tuneloop.safety.classifier reproduces, then compares the probabilities of both on a few
thousand strings (the shipped examples, random mixes of the vocabulary, edge cases) and prints the largest
difference. Nothing at run time or in the tests runs this.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from shipped_text import doc_paragraphs, example_texts  # beside this script

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "src" / "tuneloop" / "safety" / "data"
EXPECTED = {"analyzer": "word", "lowercase": True, "ngram_range": (1, 1), "token_pattern": r"(?u)\b\w\w+\b",
            "strip_accents": None, "preprocessor": None, "tokenizer": None, "norm": "l2", "use_idf": True,
            "sublinear_tf": False, "binary": False, "input": "content", "vocabulary": None}


def load(package: Path):
    import joblib  # only here: the one place tuneloop's tree reads a pickle, from the PyPI wheel, by hand

    return joblib.load(package / "data" / "vectorizer.joblib"), joblib.load(package / "data" / "model.joblib")


def convert(vectorizer, model, version: str) -> dict[str, np.ndarray]:
    params = vectorizer.get_params()
    wrong = {k: params[k] for k, v in EXPECTED.items() if params[k] != v}
    assert not wrong, f"vectorizer parameters tuneloop does not reproduce: {wrong}"
    words = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    assert [vectorizer.vocabulary_[w] for w in words] == list(range(len(words)))
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    # Stop words are dropped before counting; with unigrams that is a no-op only if none is in the vocabulary.
    assert not set(words) & set(ENGLISH_STOP_WORDS) and all("\n" not in w for w in words)
    assert list(model.classes_) == [0, 1] and model.method == "sigmoid"
    folds = model.calibrated_classifiers_
    tensors = {
        "idf": np.ascontiguousarray(vectorizer.idf_, dtype=np.float64),
        "coef": np.stack([f.estimator.coef_[0] for f in folds]).astype(np.float64),
        "intercept": np.array([f.estimator.intercept_[0] for f in folds], dtype=np.float64),
        "sigmoid": np.array([[f.calibrators[0].a_, f.calibrators[0].b_] for f in folds], dtype=np.float64),
    }
    meta = {"vocabulary": "\n".join(words), "token_pattern": EXPECTED["token_pattern"],
            "source": f"alt-profanity-check {version} (MIT), converted by benchmarks/safety/convert_profanity_model.py"}
    return tensors, meta


def check_strings(vocabulary: list[str], seed: int = 0) -> list[str]:
    """Shipped example texts, vocabulary mixes in odd cases and punctuation, edge cases."""
    texts = [text for found in example_texts().values() for text in found] + doc_paragraphs()
    for name in ("heldout_offensive.jsonl", "heldout_ordinary.jsonl"):  # the screening check's sets, beside this script
        if (Path(__file__).parent / name).is_file():
            texts += [json.loads(line)["text"] for line in (Path(__file__).parent / name).read_text().splitlines()]
    rng = random.Random(seed)
    for _ in range(3000):
        words = rng.choices(vocabulary, k=rng.randint(1, 40)) + rng.choices(["the", "and", "123", "ü", "x"], k=rng.randint(0, 5))
        words = [w.upper() if rng.random() < 0.2 else w.title() if rng.random() < 0.2 else w for w in words]
        texts.append(rng.choice([" ", ", ", "! ", "\n", "-"]).join(words))
    texts += ["", " ", "!!!", "a b c", "ÉCOLE Straße İstanbul", "x" * 5000, "word " * 2000]
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, required=True, help="alt_profanity_check-*.whl downloaded from PyPI")
    args = parser.parse_args()
    version = args.wheel.name.split("-")[1]
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(args.wheel) as wheel:
            wheel.extractall(tmp)
        vectorizer, model = load(Path(tmp) / "profanity_check")
        licence = next(Path(tmp).glob("*.dist-info/licenses/LICENSE")).read_text()
    tensors, meta = convert(vectorizer, model, version)
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / "profanity.safetensors"
    save_file(tensors, str(target), metadata=meta)
    (OUT / "PROFANITY_MODEL_LICENSE.txt").write_text(
        f"data/profanity.safetensors holds the parameters of the model shipped in alt-profanity-check {version}\n"
        "(https://github.com/dimitrismistriotis/alt-profanity-check, from https://github.com/vzhou842/profanity-check),\n"
        "converted from its joblib files without change. Its licence:\n\n" + licence)

    sys.path.insert(0, str(ROOT / "src"))
    from tuneloop.safety.classifier import ProfanityModel

    ours = ProfanityModel(target)
    texts = check_strings(meta["vocabulary"].split("\n"))
    theirs = model.predict_proba(vectorizer.transform(texts))[:, 1]
    mine = ours.scores(texts)
    diff = np.abs(theirs - mine)
    agree = np.mean((theirs >= 0.5) == (mine >= 0.5))
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB; vocabulary {len(ours.vocabulary):,} words, "
          f"{tensors['coef'].shape[0]} calibration folds)")
    print(f"{len(texts):,} strings: max |p_package - p_tuneloop| = {diff.max():.2e} (mean {diff.mean():.2e}); "
          f"same verdict at 0.5 on {agree:.2%} ({int((theirs >= 0.5).sum()):,} of them profane for the package)")
    assert diff.max() < 1e-9, "the numpy predict does not reproduce the package"


if __name__ == "__main__":
    main()
