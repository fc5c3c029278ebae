"""Duplicate detection: normalisation, exact keys, near-duplicate index (find, query, recall, determinism)."""

import json
import pickle
import random
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tuneloop.data.dedup import NearDuplicateIndex, exact_key, lsh_params, normalise

VOCAB = [f"word{i}" for i in range(3000)]


def message(rng: random.Random, n_words: int) -> str:
    """A synthetic ticket: shared opener and sign-off around random words, like real tickets' templates."""
    return " ".join(["Hi team,", *rng.choices(VOCAB, k=n_words - 4), "thanks a lot!"])


def replace_word(text: str, position: int, new: str = "CHANGED") -> str:
    words = text.split()
    words[position] = new
    return " ".join(words)


def test_normalise_folds_case_whitespace_and_edge_punctuation():
    assert normalise("  Hello,\t WORLD!!\n") == "hello world"
    assert normalise("“Quoted” (aside) -- done.") == "quoted aside done"


def test_normalise_keeps_inner_punctuation_and_applies_nfkc():
    assert normalise("It's an e-mail: v1.2") == "it's an e-mail v1.2"
    assert normalise("ﬁne ＡＢＣ Straße") == "fine abc strasse"  # ligature, full-width, casefold


def test_exact_key_matches_texts_that_normalise_alike():
    assert exact_key("Hello  World!") == exact_key("hello world")
    assert exact_key("hello world") != exact_key("hello there")
    assert len(exact_key("x")) == 64 and int(exact_key("x"), 16) >= 0


@pytest.mark.parametrize("n_words, position", [
    # A mid-text substitution changes 3 shingles: true Jaccard (n-5)/(n+1) is 0.806 at 30 words, right
    # on the 0.8 threshold where a 64-permutation estimate is a coin toss, so at 30 words we edit the
    # last word (one shingle changes, 0.93) and the mid-text edit uses 60 words (0.90).
    (30, -1),
    (60, 30),
])
def test_one_word_edit_is_found_with_the_first_rows_key(n_words, position):
    original = message(random.Random(n_words), n_words)
    index = NearDuplicateIndex()
    assert index.find_or_add("first", original) is None
    match = index.find_or_add("second", replace_word(original, position))
    assert match is not None
    key, similarity = match
    assert key == "first" and 0.8 <= similarity < 1.0
    assert len(index) == 1  # the duplicate was not indexed


def test_unrelated_message_is_not_a_duplicate_and_is_indexed():
    rng = random.Random(1)
    index = NearDuplicateIndex()
    index.find_or_add("a", message(rng, 30))
    assert index.find_or_add("b", message(rng, 30)) is None
    assert len(index) == 2


def test_identical_short_texts_match_and_different_ones_do_not():
    index = NearDuplicateIndex()
    assert index.find_or_add("a", "Refund please") is None
    assert index.find_or_add("b", "refund, PLEASE!") == ("a", 1.0)
    assert index.find_or_add("c", "refund now") is None
    assert len(index) == 2


def test_query_does_not_add_and_ranks_most_similar_first():
    rng = random.Random(2)
    long_row, short_row = message(rng, 40), message(rng, 20)
    index = NearDuplicateIndex(threshold=0.2, num_perm=256)
    index.find_or_add("long", long_row)
    index.find_or_add("short", short_row)
    # Contains all of both rows: true Jaccard 0.66 with the long one, 0.31 with the short one.
    both = long_row + " " + short_row
    results = index.query(both)
    assert [key for key, _ in results] == ["long", "short"]
    assert results[0][1] > results[1][1] >= 0.2
    assert len(index) == 2
    assert index.query("completely different words here") == []
    assert len(index) == 2


def test_find_or_add_after_query_still_indexes():
    index = NearDuplicateIndex()
    text = message(random.Random(3), 30)
    assert index.query(text) == []
    assert index.query(text) == []  # the first query left nothing behind
    assert index.find_or_add("a", text) is None
    assert index.query(text) == [("a", 1.0)]


def estimated_jaccard(a: str, b: str, **index_args) -> float:
    """The index's own estimate for one pair, read through an index whose LSH proposes any shared value."""
    oracle = NearDuplicateIndex(threshold=0.01, **index_args)
    oracle.find_or_add("a", a)
    return dict(oracle.query(b)).get("a", 0.0)


def test_lsh_candidates_below_threshold_are_not_reported():
    rng = random.Random(4)
    original = message(rng, 60)
    index = NearDuplicateIndex()
    index.find_or_add("a", original)
    variants = []
    for _ in range(30):  # five scattered edits: true Jaccard ~0.6, an LSH candidate about a third of the time
        text = original
        for position in rng.sample(range(60), 5):
            text = replace_word(text, position)
        variants.append(text)
    assert all(estimated_jaccard(original, text) < 0.8 for text in variants)
    assert [index.query(text) for text in variants] == [[] for _ in variants]


def test_pairs_estimated_at_the_threshold_are_not_lost_by_lsh():
    # Mid-text edits of 30-word rows sit at true Jaccard 0.806, so estimates straddle 0.8: every pair the
    # estimate puts at or above the threshold must also be proposed by the LSH bands.
    rng = random.Random(5)
    confirmed = found = 0
    for _ in range(60):
        original = message(rng, 30)
        edited = replace_word(original, rng.randrange(5, 25))
        if estimated_jaccard(original, edited) >= 0.8:
            confirmed += 1
            index = NearDuplicateIndex()
            index.find_or_add("a", original)
            found += index.find_or_add("b", edited) is not None
    assert confirmed >= 20
    assert found / confirmed >= 0.95


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_threshold_outside_open_unit_interval_is_rejected(threshold):
    with pytest.raises(ValueError, match="threshold"):
        NearDuplicateIndex(threshold=threshold)


def test_thresholds_near_one_still_build_and_match():
    index = NearDuplicateIndex(threshold=0.99)
    index.find_or_add("a", "the same words every time")
    assert index.find_or_add("b", "The same words, every time.") == ("a", 1.0)


def test_bad_shingle_and_num_perm_and_repeated_key_are_rejected():
    with pytest.raises(ValueError, match="shingle"):
        NearDuplicateIndex(shingle=0)
    with pytest.raises(ValueError, match="num_perm"):
        NearDuplicateIndex(num_perm=1)
    index = NearDuplicateIndex()
    index.find_or_add("a", "one text")
    with pytest.raises(ValueError, match="already indexed"):
        index.find_or_add("a", "another text entirely")


def test_index_keeps_sketches_not_texts():
    index = NearDuplicateIndex()
    index.find_or_add("a", "zebracorn unicycle " * 20)
    assert b"zebracorn" not in pickle.dumps(index)


def planted_rows(n_rows: int, seed: int) -> list[tuple[str, str, str | None]]:
    """(key, text, key of the row it near-duplicates or None); every 10th row edits an earlier one."""
    rng = random.Random(seed)
    rows: list[tuple[str, str, str | None]] = []
    for i in range(n_rows):
        originals = [row for row in rows if row[2] is None]
        if i % 10 == 9:
            source_key, source_text, _ = rng.choice(originals)
            words = source_text.split()
            edited = replace_word(source_text, rng.randrange(len(words)), f"edit{i}")
            rows.append((f"row{i}", edited, source_key))
        else:
            rows.append((f"row{i}", message(rng, rng.randint(40, 80)), None))
    return rows


def run_stream(index: NearDuplicateIndex, rows) -> dict[str, tuple[str, float] | None]:
    return {key: index.find_or_add(key, text) for key, text, _ in rows}


def test_recall_on_planted_near_duplicates_without_false_positives():
    rows = planted_rows(200, seed=7)
    found = run_stream(NearDuplicateIndex(), rows)
    planted = [(key, source) for key, _, source in rows if source]
    recalled = sum(1 for key, source in planted if found[key] and found[key][0] == source)
    assert recalled / len(planted) >= 0.9
    # Rows written independently share only the template words: none may be reported.
    assert [key for key, _, source in rows if source is None and found[key]] == []


def test_same_seed_gives_same_results_and_seed_matters():
    rows = planted_rows(100, seed=8)
    first = run_stream(NearDuplicateIndex(seed=3), rows)
    assert run_stream(NearDuplicateIndex(seed=3), rows) == first
    other = run_stream(NearDuplicateIndex(seed=4), rows)
    # Other permutations give other similarity estimates for at least one planted pair.
    assert other != first


def test_results_do_not_depend_on_the_process_string_hash_salt():
    # Python salts str hashing per process; an index built on hash() or on set order would differ here.
    code = (
        "import json; from tests.data.test_dedup import planted_rows, run_stream;"
        "from tuneloop.data.dedup import NearDuplicateIndex;"
        "print(json.dumps(run_stream(NearDuplicateIndex(), planted_rows(60, seed=9)), sort_keys=True))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
            env={"PYTHONHASHSEED": salt},
        ).stdout
        for salt in ("1", "2")
    }
    assert len(outputs) == 1
    here = run_stream(NearDuplicateIndex(), planted_rows(60, seed=9))
    assert json.loads(outputs.pop()) == json.loads(json.dumps(here))  # JSON turns tuples into lists


# --- the sketches (rensa's R-MinHash) and the band choice -------------------------------------------
def test_band_choice_matches_the_weighted_optimum_and_near_one_falls_back_to_two_bands():
    # The values datasketch's MinHashLSH picks with weights (0.05, 0.95); we integrate the same rule ourselves.
    assert lsh_params(0.8, 128) == (16, 8)
    assert lsh_params(0.8, 64) == (10, 6)
    assert lsh_params(0.99, 64) == (2, 32)


def test_sketching_many_texts_at_once_equals_one_at_a_time_and_is_compact():
    index = NearDuplicateIndex(num_perm=128)
    rng = random.Random(10)
    texts = [message(rng, n) for n in (3, 10, 40)] + ["", "one"]
    together = index.sketch_many([normalise(text) for text in texts])
    assert together == [index.sketch(text) for text in texts]
    assert {len(sketch) for sketch in together} == {128 * 4 + 16 * 8}  # 128 uint32 values, 16 int64 band keys


def test_sketches_are_the_same_in_another_process_with_another_string_hash_salt():
    code = (
        "from tuneloop.data.dedup import NearDuplicateIndex;"
        "print(NearDuplicateIndex(num_perm=128).sketch('the quick brown fox jumps over the lazy dog').hex())"
    )
    outputs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                       env={"PYTHONHASHSEED": salt}).stdout.strip()
        for salt in ("3", "4")
    }
    assert outputs == {NearDuplicateIndex(num_perm=128).sketch("the quick brown fox jumps over the lazy dog").hex()}


def test_sketch_from_an_index_with_other_arguments_is_refused():
    sketch = NearDuplicateIndex(num_perm=128).sketch("some words to sketch here")
    with pytest.raises(ValueError, match="other arguments"):
        NearDuplicateIndex(num_perm=64).find_or_add("a", sketch=sketch)


def shingle_set_pair(rng: random.Random, n_shingles: int, jaccard: float) -> tuple[str, str, float]:
    """Two texts of one-word shingles (shingle=1) sharing a set fraction of them: (a, b, true Jaccard)."""
    shared = round(2 * n_shingles * jaccard / (1 + jaccard))
    common = [f"c{rng.randrange(10**9)}" for _ in range(shared)]
    a = common + [f"a{rng.randrange(10**9)}" for _ in range(n_shingles - shared)]
    b = common + [f"b{rng.randrange(10**9)}" for _ in range(n_shingles - shared)]
    return " ".join(a), " ".join(b), shared / (2 * n_shingles - shared)


@pytest.mark.parametrize("true_jaccard, lowest, highest", [(0.9, 0.98, 1.0), (0.5, 0.0, 0.0)])
def test_data_stage_settings_find_pairs_at_0_9_and_never_pairs_at_0_5(true_jaccard, lowest, highest):
    # The data stage's index (threshold 0.8, 128 permutations): one pair per fresh index, 100 pairs.
    rng = random.Random(11)
    found = 0
    for _ in range(100):
        a, b, _ = shingle_set_pair(rng, 40, true_jaccard)
        index = NearDuplicateIndex(threshold=0.8, num_perm=128, shingle=1)
        index.find_or_add("a", a)
        found += index.find_or_add("b", b) is not None
    assert lowest <= found / 100 <= highest
