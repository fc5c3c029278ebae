"""The screen: blocklist matching (whole word, case, phrases, punctuation), allow-lists, configured lists,
and which detector a flag names."""

import pytest

from tuneloop.config import SafetyConfig
from tuneloop.errors import TuneloopError
from tuneloop.safety import Flag, Screen, screen
from tuneloop.safety.blocklist import DEFAULT, Blocklist, read_terms


@pytest.mark.parametrize("text, found", [
    ("what an ass", "ass"),
    ("ASS!", "ass"),
    ("the class is passing, assess it", None),  # whole words only
    ("f*ck this", "f*ck"),
    ("f*cking hell", None),  # a letter touches the term
    ("i'll\n  hurt you", "i'll hurt you"),  # a phrase across any whitespace
    ("I\u2019ll hurt you", "i\u2019ll hurt you"),  # curly apostrophe
    ("ill hurt you", None),
])
def test_blocklist_matches_whole_words_and_phrases_case_insensitively(text, found):
    assert Blocklist(["ass", "f*ck", "i'll hurt   you"]).find(text) == found


def test_allow_list_blanks_terms_before_either_detector():
    words = Blocklist(["dick"], allow=["Dick's Sporting Goods"])
    assert words.find("Bought at Dick's Sporting Goods") == "dick"
    assert words.find(words.clear("Bought at Dick's Sporting Goods")) is None
    assert words.find(words.clear("Dick's Sporting Goods sold me a dick of a lamp")) == "dick"
    text = "The print head is clogged with black ink."  # a false positive of the classifier at 0.5
    assert Screen(SafetyConfig(threshold=0.5, default_blocklist=False))([text])[0].rule == "classifier"
    assert Screen(SafetyConfig(threshold=0.5, default_blocklist=False, allow=["black ink"]))([text]) == [None]


def test_configured_lists_terms_and_the_default_list(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("# our list\n\nBrandX sucks\n  zorblat  \n")
    assert read_terms(path) == ["BrandX sucks", "zorblat"]
    texts = ["the zorblat again", "brandx SUCKS", "my order is late", "kys"]
    flags = Screen(SafetyConfig(threshold=None, blocklists=[path]))(texts)
    assert [f.term if f else None for f in flags] == ["zorblat", "brandx sucks", None, "kys"]  # kys: the default list
    assert Screen(SafetyConfig(threshold=None, default_blocklist=False, terms=["late"]))(texts)[2].term == "late"
    assert Screen(SafetyConfig(threshold=None, default_blocklist=False))(texts) == [None] * 4
    assert "kill yourself" in read_terms(DEFAULT)
    with pytest.raises(TuneloopError, match="missing.txt"):
        Screen(SafetyConfig(blocklists=[tmp_path / "missing.txt"]))


def test_flags_name_the_detector_score_and_term():
    ok, insult, threat = screen(["Thanks, it works now.", "you pathetic moron", "go kill yourself"])
    assert ok is None
    assert insult.rule == "classifier" and insult.score >= 0.8 and insult.term is None
    assert str(insult).startswith("classifier score ") and str(insult).endswith(">= 0.8")
    assert threat == Flag("blocklist", threat.score, 0.8, "kill yourself") and str(threat) == "blocklist term 'kill yourself'"
    assert screen([]) == []


def test_threshold_is_configurable_and_none_turns_the_classifier_off():
    text = ["this stupid bug again"]
    score = Screen()(text)[0].score
    assert Screen(SafetyConfig(threshold=min(1.0, score + 0.01)))(text) == [None]
    assert Screen(SafetyConfig(threshold=None))(text) == [None]


def test_mode_alone_is_a_valid_section():
    assert SafetyConfig.model_validate("warn").mode == "warn"
    with pytest.raises(ValueError):
        SafetyConfig.model_validate("sometimes")
