"""The numpy profanity classifier: clear cases either way, the vectorizer's arithmetic (checked against
scikit-learn rebuilt from the shipped parameters, no pickle involved), and the shipped file itself."""

import numpy as np
import pytest
from safetensors import safe_open

from tuneloop.safety.classifier import MODEL, TOKEN, default_model

PROFANE = ["You are a worthless idiot.", "This garbage blender is a piece of shit.", "Your support team are morons",
           "what the fuck is wrong with you people"]
ORDINARY = ["Can you resend the invoice for order 4471?", "Thanks, the replacement works.",
            "The courier left the parcel at the wrong door.", "How do I reset the router to factory settings?", ""]


def test_clear_profanity_scores_high_and_ordinary_support_text_low():
    model = default_model()
    assert all(model.scores(PROFANE) > 0.9)
    assert all(model.scores(ORDINARY) < 0.3)


def test_scores_are_probabilities_one_per_text_and_ignore_case_and_repetition():
    model = default_model()
    assert model.scores([]).shape == (0,)
    scores = model.scores(["IDIOT", "idiot", "idiot idiot idiot", "!!!", "", "zzqx"])
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[0] == scores[1] == pytest.approx(scores[2])  # lowercased; L2 norm: a repeated word is the same vector
    assert scores[3] == scores[4] == scores[5]  # no known word: the intercepts alone


def test_same_probabilities_as_scikit_learn_rebuilt_from_the_shipped_parameters():
    from scipy.special import expit
    from sklearn.feature_extraction.text import TfidfVectorizer

    model = default_model()
    words = sorted(model.vocabulary, key=model.vocabulary.get)
    vectorizer = TfidfVectorizer(vocabulary=words, stop_words="english", token_pattern=TOKEN.pattern, lowercase=True)
    vectorizer.fit(["x"])
    vectorizer.idf_ = model.idf
    texts = [*PROFANE, *ORDINARY, "Ünïcode STRASSE café, the and of", "a-b_c d'e 12 345", "hell\nno\tdamn"]
    features = vectorizer.transform(texts)
    decisions = features @ model.coef.T + model.intercept  # (texts, folds)
    expected = expit(-(model.sigmoid[:, 0] * decisions + model.sigmoid[:, 1])).mean(axis=1)
    np.testing.assert_allclose(model.scores(texts), expected, atol=1e-12)


def test_shipped_model_is_small_safetensors_with_its_licence():
    assert MODEL.stat().st_size < 5_000_000
    with safe_open(str(MODEL), framework="numpy") as f:
        assert set(f.keys()) == {"idf", "coef", "intercept", "sigmoid"}
        assert "alt-profanity-check" in f.metadata()["source"]
    licence = (MODEL.parent / "PROFANITY_MODEL_LICENSE.txt").read_text()
    assert "MIT License" in licence and "Victor Zhou" in licence
    assert not list(MODEL.parent.glob("*.joblib")) and not list(MODEL.parent.glob("*.pkl"))
